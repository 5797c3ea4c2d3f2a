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
    """A message from a peer: `from_` (its name) and `message` (bytes)."""

    @property
    def message(self) -> bytes: ...

    def __repr__(self) -> str: ...

class TransferRequest:
    """
    A transfer made by Agent.create_transfer: post() starts it, wait() waits for it. Thread-safe; may outlive its Agent (it then reports errors).
    """

    def post(self) -> None:
        """Starts the transfer; never waits for the data."""

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

class Agent:
    """
    One named endpoint per process or GPU worker (kvferry/agent.h). Thread-safe; blocking calls release the GIL. close() (or a `with` block) stops it; requests may outlive it.
    """

    def __init__(self, name: str, backends: Sequence[str] | None = None, params: Mapping[str, str] | None = None, peer_timeout: float = 5.0, connect_timeout: float = 3.0, max_notification_bytes: int = 65536, max_inbox_notifications: int = 65536) -> None:
        """
        `backends`: names to start (all usable when None); `params`: {'tcp.streams': '4', ...}; timeouts in seconds.
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

    def register_memory(self, regions: object, kind: object | None = None) -> None:
        """
        Registers memory, one region per item: a numpy array, a torch tensor (CPU or CUDA), any DLPack or __cuda_array_interface__ object, an (address, length[, device]) tuple, a DescriptorList, or a list of them. `kind` ('dram', 'vram') overrides the kind found (tuples default to dram). Arrays and tensors stay referenced until deregistered.
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

    def prepare_local(self, descriptors: object, kind: object | None = None) -> PreparedList:
        """
        Validates a DescriptorList, an (N, 2) / (N, 3) integer array or a list of (address, length[, device]) once, for index transfers.
        """

    def prepare_remote(self, peer: str, descriptors: object, kind: object | None = None) -> PreparedList: ...

    @overload
    def create_transfer(self, op: object, local: PreparedList, local_indices: object, remote: PreparedList, remote_indices: object, *, notification: object | None = None, backend: str = '') -> TransferRequest:
        """
        Index transfer (the hot path): pairs local[local_indices[i]] with remote[remote_indices[i]]. Index arrays: uint32 C-contiguous numpy arrays are used in place; other integer arrays and lists are converted once. `notification` (str or bytes) reaches the peer after all bytes.
        """

    @overload
    def create_transfer(self, op: object, local: object, peer: str, remote: object, *, notification: object | None = None, backend: str = '', local_kind: object | None = None, remote_kind: object | None = None) -> TransferRequest:
        """
        Pairwise transfer of local[i] with the peer's remote[i] (DescriptorLists, (N, 2|3) arrays or tuple lists, of kind `local_kind` / `remote_kind`, dram by default); a file of this agent is the peer `agent.name` with remote_kind='file'.
        """

    def notify(self, peer: str, message: object) -> None:
        """Sends `message` (str or bytes) to the peer's inbox, without data."""

    def take_notifications(self) -> list[Notification]: ...

    def wait_for_notifications(self, timeout: float) -> bool:
        """
        Blocks (GIL released) until the inbox holds a notification or `timeout` s pass.
        """

    def dropped_notifications(self) -> int: ...

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

    def create_transfer(self, agent: Agent, plan: BlockPlan, *, notification: object | None = None, backend: str = '') -> TransferRequest: ...

class LocalKvPool:
    """A pool on an Agent: published in its metadata, prepared once."""

    @staticmethod
    def attach(agent: Agent, pool: KvPool, key: str = 'kv.pool') -> LocalKvPool: ...

    @property
    def pool(self) -> KvPool: ...

    @property
    def blocks(self) -> PreparedList: ...

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
