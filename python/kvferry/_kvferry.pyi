"""kvferry's native module; import `kvferry` instead."""

from collections.abc import Mapping, Sequence
import enum
from typing import Annotated, overload

import numpy
from numpy.typing import NDArray


class MemoryKind(enum.Enum):
    """Where bytes live: host memory, CUDA device memory, or a file."""

    def __str__(self) -> str: ...

    DRAM = 0

    VRAM = 1

    FILE = 2

class TransferOp(enum.Enum):
    """
    Direction seen from the initiator: READ remote -> local, WRITE local -> remote.
    """

    def __str__(self) -> str: ...

    READ = 0

    WRITE = 1

class TransferState(enum.Enum):
    def __str__(self) -> str: ...

    READY = 0

    IN_PROGRESS = 1

    DONE = 2

    ERROR = 3

class DescriptorList:
    """
    Descriptors (address, length, device) of one memory kind. A plain value.
    """

    def __init__(self, kind: object = 'dram', descriptors: object | None = None) -> None:
        """
        `descriptors`: an (N, 2) or (N, 3) integer array of address, length[, device], or a list of tuples.
        """

    @property
    def kind(self) -> MemoryKind: ...

    def add(self, address: int, length: int, device: int = 0) -> None: ...

    def total_bytes(self) -> int: ...

    def __len__(self) -> int: ...

    def __getitem__(self, arg: int, /) -> tuple: ...

    def to_numpy(self) -> NDArray[numpy.uint64]:
        """An (N, 3) uint64 array of address, length, device (a copy)."""

    def __repr__(self) -> str: ...

class PreparedList:
    """
    A descriptor list validated once (Agent.prepare_local / prepare_remote), for index transfers. Immutable; safe to share between threads.
    """

    @property
    def valid(self) -> bool: ...

    @property
    def kind(self) -> MemoryKind: ...

    @property
    def is_local(self) -> bool: ...

    @property
    def peer(self) -> str: ...

    def __len__(self) -> int: ...

class TransferTelemetry:
    @property
    def backend(self) -> str: ...

    @property
    def bytes(self) -> int: ...

    @property
    def descriptors_requested(self) -> int: ...

    @property
    def descriptors_merged(self) -> int: ...

    @property
    def prepare_ns(self) -> int: ...

    @property
    def post_ns(self) -> int: ...

    @property
    def transfer_ns(self) -> int: ...

    @property
    def posts(self) -> int: ...

class Notification:
    """
    A message from a peer: `from_` (its name), `message` (bytes), `tag` (the sender's).
    """

    @property
    def message(self) -> bytes: ...

    @property
    def tag(self) -> int: ...

    def __repr__(self) -> str: ...

class TransferRequest:
    """
    A transfer made by Agent.create_transfer: post() starts it, wait() waits for it. Thread-safe; may outlive its Agent (it then reports errors).
    """

    def post(self, queue: CompletionQueue | None = None) -> None:
        """
        Starts the transfer; never waits for the data. With `queue`, the end of this post (tag, status, telemetry) is pushed there: exactly one completion, a raised error included.
        """

    @property
    def state(self) -> TransferState: ...

    def error(self) -> object:
        """The kvferry.Error of a failed request (not raised), or None."""

    def wait(self, timeout: float = 30.0) -> None:
        """
        Blocks (GIL released) up to `timeout` seconds: returns when done, raises kvferry.Timeout while still in progress, else the transfer's error.
        """

    def done(self) -> bool: ...

    def cancel(self) -> None: ...

    def telemetry(self) -> TransferTelemetry: ...

    @property
    def peer(self) -> str: ...

    @property
    def op(self) -> TransferOp: ...

    @property
    def tag(self) -> int: ...

class SharedMemory:
    """
    Host memory that same-host peers can map (Agent.allocate_shared_memory). Deregister it before dropping it.
    """

    @property
    def address(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def huge_pages(self) -> bool: ...

    def descriptors(self) -> DescriptorList: ...

    def array(self) -> Annotated[NDArray[numpy.uint8], dict(shape=(None,))]:
        """
        A uint8 numpy view of the whole allocation (it keeps the allocation alive).
        """

class FileRegistration:
    @property
    def id(self) -> int: ...

    @property
    def length(self) -> int: ...

    @property
    def direct(self) -> bool: ...

    @property
    def direct_alignment(self) -> int: ...

    @property
    def path(self) -> str: ...

    def region(self) -> DescriptorList:
        """The whole file as one descriptor, (0, length, id)."""

    def at(self, offset: int, bytes: int) -> tuple:
        """One descriptor of this file: (offset, bytes, id)."""

class FileInfo:
    @property
    def exists(self) -> bool: ...

    @property
    def regular(self) -> bool: ...

    @property
    def size(self) -> int: ...

def query_file(path: str) -> FileInfo:
    """Whether `path` exists and how large it is."""

class BackendInfo:
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def usable(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    def __repr__(self) -> str: ...

def compiled_backends() -> list[BackendInfo]:
    """
    The backends compiled into this build and whether each is usable here (and why not).
    """

def version_string() -> str: ...

class Completion:
    """The end of one posted request: its tag, how it ended, telemetry."""

    @property
    def tag(self) -> int: ...

    @property
    def peer(self) -> str: ...

    @property
    def telemetry(self) -> TransferTelemetry: ...

    @property
    def ok(self) -> bool: ...

    def error(self) -> object:
        """
        The kvferry.Error of a failed request (not raised), or None when it is done.
        """

    def __repr__(self) -> str: ...

class CompletionQueue:
    """
    Completions of requests posted into it (TransferRequest.post(queue), post_batch): exactly one per post, however it ends. fileno() is readable while completions wait (select, asyncio add_reader); only wait on it. Copies share one queue.
    """

    def __init__(self) -> None: ...

    def fileno(self) -> int:
        """The queue's eventfd: readable exactly while completions wait."""

    def drain(self, max: int | None = None) -> list[Completion]:
        """Takes up to `max` completions, oldest first."""

    def wait(self, timeout: float) -> bool:
        """
        Blocks (GIL released) until a completion waits or `timeout` s pass; returns whether one waits.
        """

    def __len__(self) -> int:
        """Completions waiting to be drained."""

    def in_flight(self) -> int:
        """Posts whose completion has not been pushed yet."""

def post_batch(requests: object, queue: CompletionQueue) -> int:
    """
    Posts every request; each one's completion goes to `queue`. Returns how many started; the others have already completed into the queue with the reason (len(requests) completions arrive in all).
    """

class Agent:
    """
    One named endpoint per process or GPU worker (kvferry/agent.h). Thread-safe; blocking calls release the GIL. close() (or a `with` block) stops it; requests may outlive it.
    """

    def __init__(self, name: str, backends: Sequence[str] | None = None, params: Mapping[str, str] | None = None, peer_timeout: float = 5.0, connect_timeout: float = 3.0, max_notification_bytes: int = 65536, max_inbox_notifications: int = 65536, metadata_service: str = '', metadata_lease: float = 5, metrics_address: str = '') -> None:
        """
        `backends`: names to start (all usable when None); `params`: {'tcp.streams': '4', ...}; timeouts in seconds. `metadata_service`: 'etcd://HOST:PORT/NAMESPACE' (peers join and leave through it; `metadata_lease` whole seconds >= 2); `metrics_address`: 'ADDRESS:PORT' of a Prometheus /metrics endpoint (port 0: any free port, see metrics_port()).
        """

    @property
    def name(self) -> str: ...

    def __repr__(self) -> str: ...

    def backends(self) -> list[str]: ...

    def close(self) -> None:
        """
        Cancels transfers, stops threads, drops references to registered memory.
        """

    def __enter__(self) -> object: ...

    def __exit__(self, *args) -> None: ...

    def register_memory(self, regions: object, kind: object | None = None, name: str | None = None) -> None:
        """
        Registers memory, one region per item: a numpy array, a torch tensor (CPU or CUDA), any DLPack or __cuda_array_interface__ object, an (address, length[, device]) tuple, a DescriptorList, or a list of them. `kind` ('dram', 'vram') overrides the kind found (tuples default to dram). `name` (e.g. 'kv.layer.17') travels in the metadata: peers find the regions with remote_named_regions. Arrays and tensors stay referenced until deregistered.
        """

    def deregister_memory(self, regions: object, kind: object | None = None) -> None:
        """Deregisters regions registered before (the same objects or extents)."""

    def allocate_shared_memory(self, bytes: int) -> SharedMemory: ...

    def register_file(self, path: str, create: bool = False, truncate: bool = False, read_only: bool = False, capacity: int = 0, preallocate: bool = True, direct: bool = True) -> FileRegistration:
        """Opens `path` and registers it as one `file` region (kvferry/file.h)."""

    def register_file_descriptor(self, fd: int, read_only: bool = False, capacity: int = 0, preallocate: bool = True, direct: bool = True) -> FileRegistration: ...

    def deregister_file(self, file_id: int) -> None: ...

    def local_metadata(self) -> bytes: ...

    def load_remote(self, metadata: bytes) -> str:
        """Loads a peer's metadata bytes; returns its name."""

    def forget_remote(self, peer: str) -> None: ...

    def remote_agents(self) -> list[str]: ...

    def remote_regions(self, peer: str) -> list[DescriptorList]: ...

    def set_metadata_entry(self, key: str, value: bytes) -> None: ...

    def remote_metadata_entry(self, peer: str, key: str) -> bytes: ...

    def listen(self, address: str = '127.0.0.1', port: int = 0) -> int:
        """Listens for peers' metadata and notifications; returns the port."""

    def fetch_remote(self, host: str, port: int, push_local: bool = True, timeout: float = 5.0) -> str:
        """
        Exchanges metadata with a listening peer (GIL released, up to `timeout` s); returns its name.
        """

    def prepare_local_lanes(self, lanes: BlockLanes) -> PreparedLanes:
        """Checks every lane against registered memory once, whole."""

    def prepare_remote_lanes(self, peer: str, lanes: BlockLanes) -> PreparedLanes:
        """Checks every lane against the peer's announced regions once, whole."""

    @overload
    def create_transfer(self, op: object, local: PreparedLanes, remote: PreparedLanes, local_blocks: object, remote_blocks: object, *, first_lane: int = 0, lane_count: int | None = None, notification: object | None = None, tag: int = 0, backend: str = '') -> TransferRequest:
        """
        Strided transfer (the engines' hot path): local block local_blocks[i] pairs with remote block remote_blocks[i] in every lane of [first_lane, first_lane + lane_count) (to the last lane when None). Block ids: uint32 C-contiguous numpy arrays are used in place; costs O(lanes + blocks).
        """

    @overload
    def create_transfer(self, op: object, local: PreparedList, local_indices: object, remote: PreparedList, remote_indices: object, *, notification: object | None = None, tag: int = 0, backend: str = '') -> TransferRequest:
        """
        Index transfer (the hot path): pairs local[local_indices[i]] with remote[remote_indices[i]]. Index arrays: uint32 C-contiguous numpy arrays are used in place; other integer arrays and lists are converted once. `notification` (str or bytes) reaches the peer after all bytes; `tag` (64-bit) rides with it and with the request's completion.
        """

    @overload
    def create_transfer(self, op: object, local: object, peer: str, remote: object, *, notification: object | None = None, tag: int = 0, backend: str = '', local_kind: object | None = None, remote_kind: object | None = None) -> TransferRequest:
        """
        Pairwise transfer of local[i] with the peer's remote[i] (DescriptorLists, (N, 2|3) arrays or tuple lists, of kind `local_kind` / `remote_kind`, dram by default); a file of this agent is the peer `agent.name` with remote_kind='file'.
        """

    def prepare_local(self, descriptors: object, kind: object | None = None) -> PreparedList:
        """
        Validates a DescriptorList, an (N, 2) / (N, 3) integer array or a list of (address, length[, device]) once, for index transfers.
        """

    def prepare_remote(self, peer: str, descriptors: object, kind: object | None = None) -> PreparedList: ...

    def notify(self, peer: str, message: object, tag: int = 0) -> None:
        """
        Sends `message` (str or bytes) with `tag` to the peer's inbox, without data.
        """

    def take_notifications(self, peer: str | None = None, tag: int | None = None) -> list[Notification]:
        """
        Drains the inbox; with `peer` and/or `tag`, takes only the matching notifications (others stay).
        """

    @overload
    def wait_for_notifications(self, timeout: float) -> bool:
        """
        Blocks (GIL released) until the inbox holds a notification or `timeout` s pass.
        """

    @overload
    def wait_for_notifications(self, keys: Sequence[tuple[str, int]], timeout: float) -> list[Notification]:
        """
        Blocks (GIL released) until, for every (peer, tag) key, a matching notification is in the inbox, then takes exactly those (the oldest match per key) and returns them in key order. Raises kvferry.Timeout naming the missing keys, taking nothing.
        """

    def dropped_notifications(self) -> int: ...

    def instance_id(self) -> str:
        """
        128 random bits (32 hex digits) drawn at creation: tells a restarted peer apart.
        """

    def remote_named_regions(self, peer: str, name: str) -> DescriptorList:
        """
        The regions a loaded peer registered under `name`, in its registration order.
        """

    def remote_region_names(self, peer: str) -> list[str]:
        """The region names a loaded peer announced, sorted."""

    def sync_metadata(self, timeout: float = 5.0) -> None:
        """
        With a metadata service: waits (GIL released) until it holds everything registered and published so far. Returns at once without one.
        """

    def take_peer_events(self) -> list[PeerEvent]:
        """Drains the peer events recorded so far, oldest first."""

    def wait_for_peer_events(self, timeout: float) -> bool:
        """
        Blocks (GIL released) until a peer event is pending or `timeout` s pass; returns whether one is.
        """

    def find_peers(self, prefix: str = '') -> list[str]:
        """Loaded peers whose name starts with `prefix`, sorted."""

    def wait_for_peers(self, prefix: str, count: int, timeout: float) -> list[str]:
        """
        Waits (GIL released) until at least `count` loaded peers match `prefix`; returns them. Raises kvferry.Timeout naming how many were found.
        """

    def metrics_text(self) -> str:
        """The Prometheus text served at /metrics."""

    def metrics_port(self) -> int:
        """
        The bound port of the metrics endpoint; kvferry.NotFound without metrics_address.
        """

class BlockLanes:
    """
    Lanes of equal blocks: block b of lane l starts at lane_addresses[l] + b * block_stride and is block_bytes long; block ids [0, blocks) exist in every lane. A plain value (KvPool.block_lanes() makes one for a pool).
    """

    def __init__(self, kind: object, lane_addresses: Sequence[int], block_stride: int, block_bytes: int, blocks: int, device: int = 0) -> None: ...

    @property
    def kind(self) -> MemoryKind: ...

    @kind.setter
    def kind(self, arg: MemoryKind, /) -> None: ...

    @property
    def device(self) -> int: ...

    @device.setter
    def device(self, arg: int, /) -> None: ...

    @property
    def lane_addresses(self) -> list[int]: ...

    @lane_addresses.setter
    def lane_addresses(self, arg: Sequence[int], /) -> None: ...

    @property
    def block_stride(self) -> int: ...

    @block_stride.setter
    def block_stride(self, arg: int, /) -> None: ...

    @property
    def block_bytes(self) -> int: ...

    @block_bytes.setter
    def block_bytes(self, arg: int, /) -> None: ...

    @property
    def blocks(self) -> int: ...

    @blocks.setter
    def blocks(self, arg: int, /) -> None: ...

    def __repr__(self) -> str: ...

class PreparedLanes:
    """
    Lanes validated once (Agent.prepare_local_lanes / prepare_remote_lanes), for strided transfers. Immutable; safe to share between threads.
    """

    @property
    def valid(self) -> bool: ...

    @property
    def lanes(self) -> int: ...

    @property
    def blocks(self) -> int: ...

    @property
    def kind(self) -> MemoryKind: ...

    @property
    def is_local(self) -> bool: ...

    @property
    def peer(self) -> str: ...

class PeerEventKind(enum.Enum):
    """What happened to a peer (kvferry/peer_events.h)."""

    def __str__(self) -> str: ...

    JOINED = 0

    UPDATED = 1

    RESTARTED = 2

    LEFT = 3

class PeerEvent:
    """A peer joined, changed, restarted or left; `revision` of its metadata."""

    @property
    def kind(self) -> PeerEventKind: ...

    @property
    def peer(self) -> str: ...

    @property
    def revision(self) -> int: ...

    def __repr__(self) -> str: ...

class KvDtype(enum.Enum):
    def __str__(self) -> str: ...

    BF16 = 0

    FP16 = 1

    FP8 = 2

    FP32 = 3

class KvArrangement(enum.Enum):
    def __str__(self) -> str: ...

    VLLM_NHD = 0

    VLLM_HND = 1

    FLASHINFER = 2

    SGLANG_TOKEN_SLOTS = 3

    MLA = 4

def dtype_bytes(dtype: object) -> int: ...

class KvGeometry:
    """
    What the model fixes: layers, KV heads, head dim, tokens per block, dtype.
    """

    def __init__(self, layers: int, kv_heads: int, head_dim: int, block_tokens: int, dtype: object = 'bf16') -> None: ...

    @property
    def layers(self) -> int: ...

    @layers.setter
    def layers(self, arg: int, /) -> None: ...

    @property
    def kv_heads(self) -> int: ...

    @kv_heads.setter
    def kv_heads(self, arg: int, /) -> None: ...

    @property
    def head_dim(self) -> int: ...

    @head_dim.setter
    def head_dim(self, arg: int, /) -> None: ...

    @property
    def block_tokens(self) -> int: ...

    @block_tokens.setter
    def block_tokens(self, arg: int, /) -> None: ...

    @property
    def dtype(self) -> KvDtype: ...

    @dtype.setter
    def dtype(self, arg: KvDtype, /) -> None: ...

    def __eq__(self, arg: KvGeometry, /) -> bool: ...

    def __repr__(self) -> str: ...

class KvLayout:
    """A geometry arranged in memory (kvferry/kv/kv_layout.h). Immutable."""

    @staticmethod
    def create(geometry: KvGeometry, arrangement: object, blocks: int) -> KvLayout: ...

    @property
    def geometry(self) -> KvGeometry: ...

    @property
    def arrangement(self) -> KvArrangement: ...

    @property
    def blocks(self) -> int: ...

    def block_bytes(self) -> int: ...

    def block_bytes_all_layers(self) -> int: ...

    def blocks_for_tokens(self, tokens: int) -> int: ...

    def tensor_count(self) -> int: ...

    def tensor_bytes(self) -> int: ...

    def pool_bytes(self) -> int: ...

    def lanes_per_layer(self) -> int: ...

    def lane_count(self) -> int: ...

    def layer_of_lane(self, lane: int) -> int: ...

    def tensor_of_lane(self, lane: int) -> int: ...

    def lane_offset(self, lane: int) -> int: ...

    def block_stride(self) -> int: ...

    def segment_bytes(self) -> int: ...

    def segment_offset(self, lane: int, block: int) -> int: ...

    def descriptor_index(self, lane: int, block: int) -> int: ...

    def descriptor_count(self) -> int: ...

    def describe(self) -> str: ...

    def __repr__(self) -> str: ...

class KvPool:
    """
    A layout plus where its tensors live. Describes memory; never owns or registers it.
    """

    @staticmethod
    def create(layout: KvLayout, kind: object, tensor_addresses: Sequence[int], device: int = 0) -> KvPool: ...

    @staticmethod
    def create_contiguous(layout: KvLayout, kind: object, base: int, device: int = 0) -> KvPool: ...

    @staticmethod
    def from_tensors(layout: KvLayout, tensors: object) -> KvPool:
        """
        A pool over an engine's existing tensors (one per layer; SGLang: k0, v0, k1, v1, ...), each exactly layout.tensor_bytes() long and contiguous. Register the same tensors with the Agent.
        """

    @property
    def layout(self) -> KvLayout: ...

    @property
    def kind(self) -> MemoryKind: ...

    @property
    def device(self) -> int: ...

    @property
    def tensor_addresses(self) -> list[int]: ...

    def segment_address(self, lane: int, block: int) -> int: ...

    def tensor_regions(self) -> DescriptorList: ...

    def block_lanes(self) -> BlockLanes:
        """The pool's segments as lanes x blocks, for prepare_*_lanes."""

    def block_descriptors(self) -> DescriptorList: ...

    def encode(self) -> bytes: ...

    @staticmethod
    def decode(data: bytes) -> KvPool: ...

class BlockPlan:
    """
    Index arrays of one planned transfer; reuse one per worker to plan without allocating. local_indices()/remote_indices() return copies.
    """

    def __init__(self) -> None: ...

    def local_indices(self) -> Annotated[NDArray[numpy.uint32], dict(shape=(None,))]: ...

    def remote_indices(self) -> Annotated[NDArray[numpy.uint32], dict(shape=(None,))]: ...

    def pairs(self) -> int: ...

    def bytes(self) -> int: ...

    def runs(self) -> object:
        """An (R, 3) array of local_first, remote_first, count."""

    def first_lane(self) -> int: ...

    def end_lane(self) -> int: ...

    def merged_descriptors(self) -> int: ...

    def op(self) -> TransferOp: ...

    def reserve(self, pairs: int) -> None: ...

class BlockPlanner:
    """Block ids -> index arrays for one pair of layouts."""

    @staticmethod
    def create(local: KvLayout, remote: KvLayout) -> BlockPlanner: ...

    def plan(self, op: object, source_blocks: object, destination_blocks: object, layers: tuple[int, int] | None = None, out: BlockPlan | None = None) -> object:
        """
        Plans moving source block i into destination block i in every lane of `layers` ((first, count), all when None). Into `out` (returns None) or a new BlockPlan.
        """

    @property
    def local_layout(self) -> KvLayout: ...

    @property
    def remote_layout(self) -> KvLayout: ...

class KvLink:
    """A local pool's link to one peer's pool: checked and prepared once."""

    @property
    def peer(self) -> str: ...

    @property
    def local_pool(self) -> KvPool: ...

    @property
    def remote_pool(self) -> KvPool: ...

    @property
    def planner(self) -> BlockPlanner: ...

    def plan(self, op: object, source_blocks: object, destination_blocks: object, layers: tuple[int, int] | None = None, out: BlockPlan | None = None) -> object:
        """
        READ: source blocks are the peer's, destination ours; WRITE: the other way round.
        """

    def create_transfer(self, agent: Agent, plan: BlockPlan, *, notification: object | None = None, tag: int = 0, backend: str = '') -> TransferRequest:
        """The plan's strided transfer over the two pools' lanes (prepared once)."""

class LocalKvPool:
    """A pool on an Agent: published in its metadata, prepared once."""

    @staticmethod
    def attach(agent: Agent, pool: KvPool, key: str = 'kv.pool') -> LocalKvPool: ...

    @property
    def pool(self) -> KvPool: ...

    @property
    def blocks(self) -> PreparedList: ...

    @property
    def lanes(self) -> PreparedLanes: ...

    def link(self, agent: Agent, peer: str, key: str = 'kv.pool') -> KvLink:
        """
        Reads the peer's pool from its loaded metadata, checks it (kvferry.FailedPrecondition names every differing field) and prepares its blocks.
        """

KV_POOL_METADATA_KEY: str = 'kv.pool'

def check_kv_compatible(ours: KvLayout, theirs: KvLayout, peer: str = '') -> None: ...

def publish_kv_pool(agent: Agent, pool: KvPool, key: str = 'kv.pool') -> None: ...

def remote_kv_pool(agent: Agent, peer: str, key: str = 'kv.pool') -> KvPool: ...

def blocks_after_prefix_hit(block_table: object, cached_tokens: int, block_tokens: int) -> Annotated[NDArray[numpy.uint32], dict(shape=(None,))]:
    """
    The tail of `block_table` that still moves when the peer holds the first `cached_tokens` tokens.
    """

def blocks_of_slot_runs(layout: KvLayout, runs: object) -> Annotated[NDArray[numpy.uint32], dict(shape=(None,))]:
    """
    SGLang token slots: the block ids holding `runs` ((N, 2) of first_slot, count), as a uint32 array.
    """

class HeadRange:
    """KV heads [first, first + count)."""

    @overload
    def __init__(self) -> None: ...

    @overload
    def __init__(self, first: int, count: int) -> None: ...

    @property
    def first(self) -> int: ...

    @first.setter
    def first(self, arg: int, /) -> None: ...

    @property
    def count(self) -> int: ...

    @count.setter
    def count(self, arg: int, /) -> None: ...

    @property
    def end(self) -> int: ...

    def empty(self) -> bool: ...

    def __eq__(self, arg: HeadRange, /) -> bool: ...

    def __repr__(self) -> str: ...

def tp_rank_heads(kv_heads: int, tp: int, rank: int) -> HeadRange:
    """The heads rank `rank` of a TP group of `tp` ranks holds."""

class TpShare:
    """
    A contiguous piece of a decode rank's heads, read from one prefill rank.
    """

    @property
    def prefill_rank(self) -> int: ...

    @property
    def decode_rank(self) -> int: ...

    @property
    def heads(self) -> HeadRange: ...

    @property
    def source_head_offset(self) -> int: ...

    @property
    def destination_head_offset(self) -> int: ...

    def __eq__(self, arg: TpShare, /) -> bool: ...

    def __repr__(self) -> str: ...

class TpMapping:
    """
    Which KV heads move between prefill TP P and decode TP D ranks. Immutable.
    """

    @staticmethod
    def create(kv_heads: int, prefill_tp: int, decode_tp: int, mla: bool = False) -> TpMapping: ...

    @property
    def kv_heads(self) -> int: ...

    @property
    def prefill_tp(self) -> int: ...

    @property
    def decode_tp(self) -> int: ...

    @property
    def mla(self) -> bool: ...

    def prefill_heads(self, prefill_rank: int) -> HeadRange: ...

    def decode_heads(self, decode_rank: int) -> HeadRange: ...

    def decode_shares(self, decode_rank: int) -> list[TpShare]:
        """
        What decode rank `d` reads, by destination offset (empty when out of range).
        """

    def prefill_shares(self, prefill_rank: int) -> list[TpShare]:
        """What prefill rank `p` sends, by decode rank then head."""

    def shares(self) -> list[TpShare]: ...

    def sources_of(self, decode_rank: int) -> list[int]: ...

    def describe(self) -> str: ...

    def __repr__(self) -> str: ...

class KvStagingShape:
    """A staging region [heads, layers, kv, tokens, head_dim]."""

    @staticmethod
    def of(layout: KvLayout, heads: int, tokens: int) -> KvStagingShape: ...

    @property
    def heads(self) -> int: ...

    @property
    def layers(self) -> int: ...

    @property
    def kv(self) -> int: ...

    @property
    def tokens(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def dtype(self) -> KvDtype: ...

    def row_bytes(self) -> int: ...

    def head_bytes(self) -> int: ...

    def bytes(self) -> int: ...

    def head_offset(self, head: int) -> int: ...

    def row_offset(self, head: int, layer: int, kv_part: int, token: int) -> int: ...

def gather_kv_heads(pool: KvPool, block_ids: object, first_token: int, tokens: int, heads: object, staging: object, *, staging_kind: object | None = None, timeout: float = 10.0, threads: int = 0) -> None:
    """
    Pool heads `heads` (HeadRange or (first, count), the pool's numbering) of tokens [first_token, +tokens) of the request whose block table is `block_ids` -> `staging` (an array, tensor or (address, length[, device]) tuple) laid out as KvStagingShape.of(pool.layout, heads.count, tokens). GIL released.
    """

def scatter_kv_heads(staging: object, pool: KvPool, block_ids: object, first_token: int, tokens: int, heads: object, *, staging_kind: object | None = None, timeout: float = 10.0, threads: int = 0) -> None:
    """
    The reverse of gather_kv_heads: staging -> pool heads `heads` of those tokens. GIL released.
    """

class TpPath(enum.Enum):
    """How a TP request moves: staged on the host or the GPUs, or directly."""

    def __str__(self) -> str: ...

    AUTO = 0

    HOST = 1

    DEVICE = 2

    DIRECT = 3

class TpGroups:
    """The model's KV heads and the two TP degrees; both sides must agree."""

    def __init__(self, kv_heads: int, prefill_tp: int, decode_tp: int, mla: bool = False) -> None: ...

    @property
    def kv_heads(self) -> int: ...

    @kv_heads.setter
    def kv_heads(self, arg: int, /) -> None: ...

    @property
    def prefill_tp(self) -> int: ...

    @prefill_tp.setter
    def prefill_tp(self, arg: int, /) -> None: ...

    @property
    def decode_tp(self) -> int: ...

    @decode_tp.setter
    def decode_tp(self, arg: int, /) -> None: ...

    @property
    def mla(self) -> bool: ...

    @mla.setter
    def mla(self, arg: bool, /) -> None: ...

class TpStagingOptions:
    """Staging arenas of a TP endpoint (slots of slot_bytes)."""

    def __init__(self, slot_bytes: int = 16777216, host_slots: int = 8, device_slots: int = 8, host_via_device: bool = True) -> None: ...

    @property
    def slot_bytes(self) -> int: ...

    @slot_bytes.setter
    def slot_bytes(self, arg: int, /) -> None: ...

    @property
    def host_slots(self) -> int: ...

    @host_slots.setter
    def host_slots(self, arg: int, /) -> None: ...

    @property
    def device_slots(self) -> int: ...

    @device_slots.setter
    def device_slots(self, arg: int, /) -> None: ...

    @property
    def host_via_device(self) -> bool: ...

    @host_via_device.setter
    def host_via_device(self, arg: bool, /) -> None: ...

class TpReceiveReport:
    """What a finished (or failed) receiver request did."""

    @property
    def path(self) -> TpPath: ...

    @property
    def sources(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def pieces(self) -> int: ...

    @property
    def elapsed_ns(self) -> int: ...

    @property
    def scatter_ns(self) -> int: ...

class TpPathEstimate:
    @property
    def path(self) -> TpPath: ...

    @property
    def direct_descriptors(self) -> int: ...

    @property
    def direct_seconds(self) -> float: ...

    @property
    def staging_seconds(self) -> float: ...

def tp_path_estimate(source: KvLayout, destination: KvLayout, kind: object, tokens: int, heads: int, shares: int) -> TpPathEstimate:
    """The cost estimate TpPath.AUTO picks by."""

def tp_direct_descriptors(source: KvLayout, destination: KvLayout, tokens: int, heads: int) -> int: ...

KV_TP_METADATA_KEY: str = 'kv.tp'

class TpSender:
    """
    A prefill rank's end of heterogeneous-TP transfers (kvferry/kv/tp_transfer.h). Progress is driven by progress() or wait(); blocking calls release the GIL. Agent.close() closes it.
    """

    def __init__(self, agent: Agent, pool: KvPool, groups: TpGroups, rank: int, *, staging: TpStagingOptions | None = None, piece_bytes: int | None = None, device_piece_bytes: int | None = None, backend: str = '') -> None: ...

    def send(self, request: str, block_table: object, first_token: int, tokens: int, last: bool) -> None:
        """
        Tokens [first_token, +tokens) of `request` are computed: send them to every decode rank that reads us.
        """

    def progress(self) -> None:
        """
        Takes decode ranks' asks, gathers and posts what can go now, reaps finished writes.
        """

    def wait(self, request: str, timeout: float) -> None:
        """
        Blocks (GIL released) until every chunk of `request` landed at every decode rank reading us; raises kvferry.Timeout naming the ranks still missing.
        """

    def take_other_notifications(self) -> list[Notification]: ...

    def close(self) -> None:
        """Cancels its transfers and deregisters its staging."""

    def __enter__(self) -> object: ...

    def __exit__(self, *args) -> None: ...

class TpReceiver:
    """
    A decode rank's end of heterogeneous-TP transfers (kvferry/kv/tp_transfer.h). Blocking calls release the GIL. Agent.close() closes it.
    """

    def __init__(self, agent: Agent, pool: KvPool, groups: TpGroups, rank: int, *, path: object = 'auto', staging: TpStagingOptions | None = None, slot_timeout: float = 5.0, peer_timeout: float = 5.0) -> None: ...

    def connect(self, prefill_peers: Sequence[str]) -> None:
        """The prefill agents (metadata loaded); once, before the first expect()."""

    def expect(self, request: str, block_table: object, tokens: int, path: object | None = None) -> None:
        """
        Asks every prefill rank we read for `request`'s `tokens` tokens, to land in our blocks `block_table`.
        """

    def progress(self) -> None: ...

    def wait(self, request: str, timeout: float) -> None:
        """
        Blocks (GIL released) until `request` is complete; raises its error, or kvferry.Timeout naming the missing senders.
        """

    def last_report(self) -> TpReceiveReport: ...

    def describe_sources(self) -> list[str]: ...

    def take_other_notifications(self) -> list[Notification]: ...

    def close(self) -> None:
        """Cancels its transfers and deregisters its staging."""

    def __enter__(self) -> object: ...

    def __exit__(self, *args) -> None: ...

class KvVramPath(enum.Enum):
    AUTO = 0

    GDS = 1

    STAGING = 2

class KvPoolView:
    """The segments of every block of a pool, for offload and onboard."""

    @property
    def kind(self) -> MemoryKind: ...

    @property
    def device(self) -> int: ...

    @property
    def blocks(self) -> int: ...

    @property
    def geometry(self) -> str: ...

def offload_view(pool: KvPool) -> KvPoolView: ...

class KvStoreInfo:
    @property
    def directory(self) -> str: ...

    @property
    def geometry(self) -> str: ...

    @property
    def segment_bytes(self) -> list[int]: ...

    @property
    def block_bytes(self) -> int: ...

    @property
    def source_blocks(self) -> list[int]: ...

    @property
    def checksums(self) -> bool: ...

class KvStoreResult:
    @property
    def store(self) -> KvStoreInfo: ...

    @property
    def bytes(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def io_seconds(self) -> float: ...

    @property
    def path(self) -> str: ...

    @property
    def verified(self) -> bool: ...

def offload_blocks(agent: Agent, pool: object, blocks: object, directory: str, *, checksums: bool = True, overwrite: bool = False, sync: bool = True, vram_path: KvVramPath = KvVramPath.AUTO, staging_bytes: int = 16777216, timeout: float = 120.0) -> KvStoreResult:
    """
    Writes blocks `blocks` of `pool` (a KvPool or KvPoolView registered with `agent`) to a new store in `directory`.
    """

def onboard_blocks(agent: Agent, pool: object, directory: str, blocks: object, entries: object | None = None, *, verify: bool = True, vram_path: KvVramPath = KvVramPath.AUTO, staging_bytes: int = 16777216, timeout: float = 120.0) -> KvStoreResult:
    """
    Reads the store's entries (all when None) into blocks `blocks` of `pool`.
    """

def inspect_store(directory: str) -> KvStoreInfo: ...
