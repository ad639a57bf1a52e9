"""The one exception root of the kernel and its protocol-neutral status codes.

Every error a client can see is a :class:`KernelError` carrying a :class:`Status`. The frontends
translate the status exactly once, through :func:`http_status` and :func:`grpc_status` (one
table, :data:`STATUS_TABLE`); nothing else in the kernel knows about HTTP or gRPC codes.

Which status to raise: a request the client got wrong (unreadable body, wrong types, data that
does not fit its shape, a name or size out of range) is ``INVALID_ARG``, ``NOT_FOUND``,
``ALREADY_EXISTS``, ``FAILED_PRECONDITION`` or one of the size statuses, with Triton's wording;
``UNAVAILABLE`` says "try again later" (queue full, shutting down); ``INTERNAL`` is reserved for
the server's own faults, and for one case kept on purpose because clients test for it: a system
shared-memory key that does not exist ("Unable to open shared memory region").
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["STATUS_TABLE", "KernelError", "Status", "StatusCodes", "grpc_status", "http_status"]


class Status(enum.Enum):
    """Triton's error codes (``TRITONSERVER_Error_Code``) and the few a request's transport
    needs besides them, independent of any protocol."""

    UNKNOWN = "UNKNOWN"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ARG = "INVALID_ARG"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CANCELLED = "CANCELLED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    """The request is valid but the server's state forbids it (e.g. a model load when the
    model control mode is not explicit)."""
    TOO_LARGE = "TOO_LARGE"
    """A request (body, message, inflated content) larger than the server accepts."""
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    """A request's header section (or one of its fields) larger than the server accepts."""
    URI_TOO_LONG = "URI_TOO_LONG"
    """A request target longer than the server accepts."""


class KernelError(Exception):
    """An error with a status a client can act on.

    Plugins raise it (or let the kernel wrap their exceptions as ``INTERNAL``); frontends answer
    it with the mapped protocol status and ``message`` as the text.
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"KernelError({self.status.name}, {self.message!r})"

    @classmethod
    def wrap(cls, exc: BaseException, context: str = "") -> KernelError:
        """Return ``exc`` if it already is a :class:`KernelError`, else an ``INTERNAL`` one."""
        if isinstance(exc, KernelError):
            return exc
        text = str(exc) or type(exc).__name__
        return cls(Status.INTERNAL, f"{context}{text}")


class StatusCodes(NamedTuple):
    """What one status is on each protocol: the HTTP status and the gRPC status number."""

    http: int
    grpc: int


# gRPC status numbers (grpc.StatusCode / grpclib.Status values).
_CANCELLED, _UNKNOWN, _INVALID_ARGUMENT, _NOT_FOUND, _ALREADY_EXISTS = 1, 2, 3, 5, 6
_RESOURCE_EXHAUSTED, _FAILED_PRECONDITION, _UNIMPLEMENTED, _INTERNAL, _UNAVAILABLE = (
    8,
    9,
    12,
    13,
    14,
)

STATUS_TABLE: dict[Status, StatusCodes] = {
    # Triton's own mapping (http_server.cc HttpCodeFromError, grpc's status codes): every
    # status it has no better HTTP code for is 400.
    Status.UNKNOWN: StatusCodes(400, _UNKNOWN),
    Status.INTERNAL: StatusCodes(500, _INTERNAL),
    Status.NOT_FOUND: StatusCodes(404, _NOT_FOUND),
    Status.INVALID_ARG: StatusCodes(400, _INVALID_ARGUMENT),
    Status.UNAVAILABLE: StatusCodes(503, _UNAVAILABLE),
    Status.UNSUPPORTED: StatusCodes(501, _UNIMPLEMENTED),
    Status.ALREADY_EXISTS: StatusCodes(400, _ALREADY_EXISTS),
    Status.CANCELLED: StatusCodes(400, _CANCELLED),
    # This server's additions, with the codes HTTP and gRPC define for them.
    Status.FAILED_PRECONDITION: StatusCodes(409, _FAILED_PRECONDITION),
    Status.TOO_LARGE: StatusCodes(413, _RESOURCE_EXHAUSTED),
    Status.HEADERS_TOO_LARGE: StatusCodes(431, _RESOURCE_EXHAUSTED),
    Status.URI_TOO_LONG: StatusCodes(414, _RESOURCE_EXHAUSTED),
}
"""Every status, its HTTP status and its gRPC status number: the one mapping of the server."""

_HTTP = {status: codes.http for status, codes in STATUS_TABLE.items()}
_GRPC = {status: codes.grpc for status, codes in STATUS_TABLE.items()}


def http_status(status: Status) -> int:
    """The HTTP status code answered for ``status``."""
    return _HTTP[status]


def grpc_status(status: Status) -> int:
    """The gRPC status code (as an int) answered for ``status``."""
    return _GRPC[status]
