"""Exceptions of kvferry: one class per status code of the C++ API.

Every failure of the C++ library (a ``kvferry::Status``) is raised as the subclass of
:class:`Error` named after its code, with the C++ message unchanged, e.g.
``kvferry.PeerLost("peer 'decode-0' stopped answering for 5000 ms ...")``.
"""


class Error(Exception):
    """Base of every kvferry error. ``code`` is the C++ status code's name."""

    code = "unknown"


# (class name, C++ status code name, built-in base besides Error, meaning): one row per
# kvferry::StatusCode (python/src/errors.cc maps codes to these names).
_CODES = (
    ("InvalidArgument", "invalid argument", ValueError, "The caller passed something malformed (lengths, indices, flags)."),
    ("NotFound", "not found", LookupError, "Unknown peer, region, backend, prepared list, metadata entry."),
    ("AlreadyExists", "already exists", None, "Overlapping registration, duplicate name."),
    ("OutOfRange", "out of range", IndexError, "A descriptor outside registered memory."),
    ("FailedPrecondition", "failed precondition", None, "The state forbids it now (e.g. memory in use by a posted transfer)."),
    ("Unavailable", "unavailable", None, "No backend can serve it here, or a peer is unreachable."),
    ("PeerLost", "peer lost", ConnectionError, "The peer died, closed, or stopped answering within the bound."),
    ("Timeout", "timeout", TimeoutError, "A wait ran out of time; the operation may still complete."),
    ("Cancelled", "cancelled", None, "The caller cancelled."),
    ("Corrupt", "corrupt", None, "Bytes from outside (metadata, frames, stores) failed validation."),
    ("RemoteError", "remote error", None, "The peer refused or failed a request; the message says why."),
    ("IoError", "io error", OSError, "An OS call failed; the message carries the errno text."),
    ("NotSupported", "not supported", None, "A backend or this build lacks the capability."),
    ("Internal", "internal", None, "A bug in kvferry: please report it."),
)

for _name, _code, _builtin, _doc in _CODES:
    globals()[_name] = type(_name, (Error,) if _builtin is None else (Error, _builtin),
                            {"code": _code, "__doc__": _doc, "__module__": __name__})

__all__ = ["Error"] + [row[0] for row in _CODES]
del _name, _code, _builtin, _doc
