"""Exceptions of kvferry: one class per status code of the C++ API.

Every failure of the C++ library (a ``kvferry::Status``) is raised as the subclass of
:class:`Error` named after its code, with the C++ message unchanged, e.g.
``kvferry.PeerLost("peer 'decode-0' stopped answering for 5000 ms ...")``.
"""


class Error(Exception):
    """Base of every kvferry error. ``code`` is the C++ status code's name."""

    code = "unknown"


class InvalidArgument(Error, ValueError):
    """The caller passed something malformed (lengths, indices, flags)."""

    code = "invalid argument"


class NotFound(Error, LookupError):
    """Unknown peer, region, backend, prepared list, metadata entry."""

    code = "not found"


class AlreadyExists(Error):
    """Overlapping registration, duplicate name."""

    code = "already exists"


class OutOfRange(Error, IndexError):
    """A descriptor outside registered memory."""

    code = "out of range"


class FailedPrecondition(Error):
    """The state forbids it now (e.g. memory in use by a posted transfer)."""

    code = "failed precondition"


class Unavailable(Error):
    """No backend can serve it here, or a peer is unreachable."""

    code = "unavailable"


class PeerLost(Error, ConnectionError):
    """The peer died, closed, or stopped answering within the bound."""

    code = "peer lost"


class Timeout(Error, TimeoutError):
    """A wait ran out of time; the operation may still complete."""

    code = "timeout"


class Cancelled(Error):
    """The caller cancelled."""

    code = "cancelled"


class Corrupt(Error):
    """Bytes from outside (metadata, frames, stores) failed validation."""

    code = "corrupt"


class RemoteError(Error):
    """The peer refused or failed a request; the message says why."""

    code = "remote error"


class IoError(Error, OSError):
    """An OS call failed; the message carries the errno text."""

    code = "io error"


class NotSupported(Error):
    """A backend or this build lacks the capability."""

    code = "not supported"


class Internal(Error):
    """A bug in kvferry: please report it."""

    code = "internal"


__all__ = [
    "Error", "InvalidArgument", "NotFound", "AlreadyExists", "OutOfRange", "FailedPrecondition",
    "Unavailable", "PeerLost", "Timeout", "Cancelled", "Corrupt", "RemoteError", "IoError",
    "NotSupported", "Internal",
]
