"""kvferry: move LLM KV-cache blocks between processes, GPUs, hosts and storage.

The C++ API (include/kvferry/) with its names: :class:`Agent`, descriptor lists,
prepared lists and index transfers, notifications, files, and the KV layer
(:class:`KvLayout`, :class:`KvPool`, :class:`BlockPlanner`, :class:`LocalKvPool`,
:class:`KvLink`, offload/onboard, heterogeneous TP: :class:`TpMapping`, :class:`TpSender`,
:class:`TpReceiver`), strided transfers (:class:`BlockLanes`), request tags and
:class:`CompletionQueue` (its ``fileno()`` for select/asyncio: :func:`wait_completions`). Memory is numpy arrays, torch tensors (CPU or CUDA,
through DLPack, never linked) or explicit ``(address, length, device)`` tuples; index
arrays are numpy arrays used in place when they are C-contiguous uint32. Every blocking
call releases the GIL. Failures raise subclasses of :class:`Error` named after the C++
status code (:class:`PeerLost`, :class:`InvalidArgument`, :class:`Timeout`, ...).
"""

from .errors import *  # noqa: F401,F403  (first: the native module raises these)
from .errors import __all__ as _error_names
from ._kvferry import *  # noqa: F401,F403
from ._kvferry import (  # noqa: F401  (names the star import would skip or that tools want spelled out)
    Agent, BlockLanes, BlockPlan, BlockPlanner, Completion, CompletionQueue, DescriptorList, HeadRange,
    KvArrangement, KvDtype, KvGeometry, KvLayout, KvLink, KvPool, KvStagingShape, LocalKvPool, MemoryKind,
    PeerEvent, PeerEventKind, PreparedLanes, PreparedList, TpGroups, TpMapping, TpPath, TpReceiver, TpSender,
    TpShare, TpStagingOptions, TransferOp, TransferRequest, TransferState, post_batch,
)
from .aio import wait_completions  # noqa: F401

__version__ = "0.1.0"

READ = TransferOp.READ
WRITE = TransferOp.WRITE
DRAM = MemoryKind.DRAM
VRAM = MemoryKind.VRAM
FILE = MemoryKind.FILE
