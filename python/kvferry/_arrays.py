"""Vectorised conversions of index and descriptor arrays (one numpy call, no per-element Python)."""

import numpy as np

from .errors import InvalidArgument

_U32_MAX = np.iinfo(np.uint32).max


def as_index_array(obj) -> np.ndarray:
    """A C-contiguous uint32 copy of `obj` (any integer array or sequence), range-checked."""
    a = np.asarray(obj)
    if a.ndim != 1:
        if a.size == 0:
            return np.empty(0, dtype=np.uint32)
        raise InvalidArgument(f"index array must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        return np.empty(0, dtype=np.uint32)
    if a.dtype.kind not in "iu":
        raise InvalidArgument(f"index array must hold integers, got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > _U32_MAX:
        bad = lo if lo < 0 else hi
        raise InvalidArgument(f"index {bad} is outside [0, {_U32_MAX}]")
    return np.ascontiguousarray(a, dtype=np.uint32)


def as_descriptor_array(obj) -> np.ndarray:
    """An (N, 2) or (N, 3) C-contiguous uint64 array of address, length[, device]."""
    a = np.asarray(obj)
    if a.size == 0:
        return np.empty((0, 3), dtype=np.uint64)
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise InvalidArgument(f"descriptors must be an (N, 2) or (N, 3) array of address, length[, device]; got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise InvalidArgument(f"descriptors must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and int(a.min()) < 0:
        raise InvalidArgument("descriptors hold a negative value")
    return np.ascontiguousarray(a, dtype=np.uint64)
