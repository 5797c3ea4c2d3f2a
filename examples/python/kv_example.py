"""Shared by vram_server.py and vram_client.py: options, the KV cache tensors of one
engine (one tensor per layer, as vLLM allocates them) and their verifiable contents.

Contents: every 8-byte word of block b, lane part p (K/V) of layer l is
``base(seed, l, p, b) ^ (word index * odd constant)``: every block differs and every word
inside it differs, so a block moved to the wrong place, shifted or torn is caught; the
expected bytes of any block are computed in a few vectorised operations, without keeping
a copy of the peer's pool: with numpy for host pools; on the GPU itself for torch tensors
(a 640 MiB check takes milliseconds there, and the GPUs are not left idle for the half
second that computing it on the host and uploading it would take).
"""

import argparse

import numpy as np

import kvferry

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def add_geometry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ip", default="127.0.0.1", help="the server's address")
    parser.add_argument("--port", type=int, default=5555, help="the server's side-channel port (0: any free port)")
    parser.add_argument("--layers", type=int, default=40, help="attention layers (one KV tensor each)")
    parser.add_argument("--heads", type=int, default=8, help="KV heads")
    parser.add_argument("--head-dim", type=int, default=128, help="head dimension")
    parser.add_argument("--tokens-per-block", type=int, default=16, help="tokens per KV block")
    parser.add_argument("--pool-blocks", type=int, default=1638,
                        help="blocks per layer tensor (1638: a 4 GiB Mistral-Small-3.1 pool)")
    parser.add_argument("--layout", default="flashinfer",
                        help="flashinfer: [blocks, 2, tokens, heads, dim] (one 64 KiB block holds K and V); "
                             "vllm-nhd: [2, blocks, tokens, heads, dim]")
    parser.add_argument("--mem", choices=["dram", "vram"], default="dram",
                        help="host memory (numpy) or GPU memory (torch tensors)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device with --mem vram")
    parser.add_argument("--backend", default="", help="force a backend (tcp, shm, cuda_ipc); default: the cheapest")
    parser.add_argument("--agent-backends", default="",
                        help="comma-separated backends the agent starts, as `kvferry bench` starts only the one it "
                             "measures on both sides (default: every usable backend)")


def agent_backends(args):
    """The `backends` argument of kvferry.Agent from --agent-backends (None: every usable one)."""
    return [b for b in args.agent_backends.split(",") if b] or None


def layout_of(args) -> kvferry.KvLayout:
    geometry = kvferry.KvGeometry(layers=args.layers, kv_heads=args.heads, head_dim=args.head_dim,
                                  block_tokens=args.tokens_per_block, dtype="bf16")
    return kvferry.KvLayout.create(geometry, args.layout, args.pool_blocks)


def allocate_tensors(layout: kvferry.KvLayout, mem: str, device: int):
    """One tensor per layer, as an engine allocates its KV cache (bf16 as 16-bit words)."""
    g = layout.geometry
    if layout.arrangement == kvferry.KvArrangement.FLASHINFER:
        shape = (layout.blocks, 2, g.block_tokens, g.kv_heads, g.head_dim)
    else:
        shape = (2, layout.blocks, g.block_tokens, g.kv_heads, g.head_dim)
    if mem == "vram":
        import torch
        return [torch.empty(shape, dtype=torch.bfloat16, device=f"cuda:{device}") for _ in range(g.layers)]
    return [np.empty(shape, dtype=np.uint16) for _ in range(g.layers)]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Pattern:
    """The contents of a pool made from `seed`, per (layer, part, block) as uint64 words."""

    def __init__(self, layout: kvferry.KvLayout, seed: int):
        self.layout = layout
        self.parts = 2  # K and V halves of a block, in both layouts
        self.words = layout.block_bytes() // 8 // self.parts  # per half block
        self.flashinfer = layout.arrangement == kvferry.KvArrangement.FLASHINFER
        layer = np.arange(layout.geometry.layers, dtype=np.uint64)[:, None, None]
        part = np.arange(self.parts, dtype=np.uint64)[None, :, None]
        block = np.arange(layout.blocks, dtype=np.uint64)[None, None, :]
        with np.errstate(over="ignore"):
            key = (np.uint64(seed) * _GOLDEN) ^ (layer << np.uint64(40)) ^ (part << np.uint64(32)) ^ block
        self.base = _mix(key)  # [layers, 2, blocks]
        with np.errstate(over="ignore"):
            self.ramp = np.arange(self.words, dtype=np.uint64) * _GOLDEN  # [words]
        self._on_device = {}  # device -> (base, ramp) as int64 tensors there

    def _tables_on(self, device):
        tables = self._on_device.get(str(device))
        if tables is None:
            import torch
            tables = (torch.from_numpy(self.base.view(np.int64)).to(device),
                      torch.from_numpy(self.ramp.view(np.int64)).to(device))
            self._on_device[str(device)] = tables
        return tables

    def words_view(self, tensor):
        """The tensor as [2, blocks, words] (vllm-nhd) or [blocks, 2, words] (flashinfer) of 64-bit words."""
        if hasattr(tensor, "view") and not isinstance(tensor, np.ndarray):  # torch
            import torch
            w = tensor.view(torch.int64)
        else:
            w = tensor.view(np.uint64)
        blocks = self.layout.blocks
        return w.reshape(blocks, 2, self.words) if self.flashinfer else w.reshape(2, blocks, self.words)

    def expected(self, layer: int, blocks: np.ndarray) -> np.ndarray:
        """[len(blocks), 2, words] (flashinfer) or [2, len(blocks), words] as uint64."""
        b = self.base[layer][:, blocks]  # [2, n]
        e = b[:, :, None] ^ self.ramp[None, None, :]
        return e.transpose(1, 0, 2) if self.flashinfer else e

    def select(self, words, blocks):
        if not isinstance(words, np.ndarray):  # torch indexes with int64 tensors
            import torch
            blocks = torch.as_tensor(blocks.astype(np.int64), device=words.device)
        return words[blocks] if self.flashinfer else words[:, blocks]

    def fill(self, tensors) -> None:
        every = np.arange(self.layout.blocks)
        for layer, t in enumerate(tensors):
            expect = self.expected(layer, every)
            w = self.words_view(t)
            if isinstance(t, np.ndarray):
                w[...] = expect
            else:
                import torch
                w.copy_(torch.from_numpy(expect.view(np.int64)))

    def check(self, tensors, local_blocks: np.ndarray, remote_blocks: np.ndarray, on_host: bool = False) -> int:
        """Compares every byte of `local_blocks` (ours) with what remote blocks `remote_blocks`
        hold; returns how many (layer, block) pairs differ. Torch tensors are checked on
        their device (one synchronisation in all), unless `on_host`: then the expected
        words are computed with numpy and uploaded, layer by layer."""
        if not on_host and not isinstance(tensors[0], np.ndarray):
            return self._check_on_device(tensors, local_blocks, remote_blocks)
        bad = 0
        for layer, t in enumerate(tensors):
            expect = self.expected(layer, remote_blocks)
            got = self.select(self.words_view(t), local_blocks)
            if isinstance(t, np.ndarray):
                diff = (got != expect)
            else:
                import torch
                diff = (got != torch.from_numpy(expect.view(np.int64)).to(got.device)).cpu().numpy()
            per_block = diff.any(axis=(1, 2)) if self.flashinfer else diff.any(axis=(0, 2))
            bad += int(per_block.sum())
        return bad

    def _check_on_device(self, tensors, local_blocks: np.ndarray, remote_blocks: np.ndarray) -> int:
        import torch
        device = tensors[0].device
        base, ramp = self._tables_on(device)
        ours = torch.as_tensor(np.asarray(local_blocks, dtype=np.int64), device=device)
        theirs = torch.as_tensor(np.asarray(remote_blocks, dtype=np.int64), device=device)
        bad = torch.zeros((), dtype=torch.int64, device=device)
        for layer, t in enumerate(tensors):
            expect = base[layer].index_select(1, theirs).unsqueeze(2) ^ ramp.view(1, 1, -1)  # [2, n, words]
            words = self.words_view(t)
            if self.flashinfer:  # [n, 2, words]
                diff = words.index_select(0, ours) != expect.transpose(0, 1)
                bad += diff.any(2).any(1).sum()
            else:  # [2, n, words]
                diff = words.index_select(1, ours) != expect
                bad += diff.any(2).any(0).sum()
        return int(bad.item())


def poison(tensors, layout: kvferry.KvLayout, blocks: np.ndarray) -> None:
    """Sets `blocks` of every tensor to 0xFF bytes, so a transfer that moved nothing fails the check."""
    flashinfer = layout.arrangement == kvferry.KvArrangement.FLASHINFER
    for t in tensors:
        if isinstance(t, np.ndarray):
            w = t.view(np.uint16)
            if flashinfer:
                w[blocks] = 0xFFFF
            else:
                w[:, blocks] = 0xFFFF
        else:
            import torch
            idx = torch.as_tensor(np.asarray(blocks, dtype=np.int64), device=t.device)
            w = t.view(torch.int16)
            if flashinfer:
                w.index_fill_(0, idx, -1)
            else:
                w.index_fill_(1, idx, -1)
