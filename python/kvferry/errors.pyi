"""Type stubs of kvferry.errors (its classes are made from one table at import)."""


class Error(Exception):
    code: str


class InvalidArgument(Error, ValueError): ...


class NotFound(Error, LookupError): ...


class AlreadyExists(Error): ...


class OutOfRange(Error, IndexError): ...


class FailedPrecondition(Error): ...


class Unavailable(Error): ...


class PeerLost(Error, ConnectionError): ...


class Timeout(Error, TimeoutError): ...


class Cancelled(Error): ...


class Corrupt(Error): ...


class RemoteError(Error): ...


class IoError(Error, OSError): ...


class NotSupported(Error): ...


class Internal(Error): ...


__all__: list[str]
