"""The one exception root of the kernel and its protocol-neutral status codes.

Every error a client can see is a :class:`KernelError` carrying a :class:`Status`. The frontends
translate the status exactly once, through :func:`http_status` and :func:`grpc_status`; nothing
else in the kernel knows about HTTP or gRPC codes.
"""

from __future__ import annotations

import enum

__all__ = ["KernelError", "Status", "grpc_status", "http_status"]


class Status(enum.Enum):
    """Triton's error codes (``TRITONSERVER_Error_Code``), independent of any protocol."""

    UNKNOWN = "UNKNOWN"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ARG = "INVALID_ARG"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CANCELLED = "CANCELLED"


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


# Triton's HTTP frontend answers every status it has no better code for with 400.
_HTTP = {
    Status.UNKNOWN: 400,
    Status.INTERNAL: 500,
    Status.NOT_FOUND: 404,
    Status.INVALID_ARG: 400,
    Status.UNAVAILABLE: 503,
    Status.UNSUPPORTED: 501,
    Status.ALREADY_EXISTS: 400,
    Status.CANCELLED: 400,
}

# gRPC status numbers (grpc.StatusCode / grpclib.Status values).
_GRPC = {
    Status.UNKNOWN: 2,
    Status.INTERNAL: 13,
    Status.NOT_FOUND: 5,
    Status.INVALID_ARG: 3,
    Status.UNAVAILABLE: 14,
    Status.UNSUPPORTED: 12,
    Status.ALREADY_EXISTS: 6,
    Status.CANCELLED: 1,
}


def http_status(status: Status) -> int:
    """The HTTP status code Triton answers for ``status``."""
    return _HTTP[status]


def grpc_status(status: Status) -> int:
    """The gRPC status code (as an int) Triton answers for ``status``."""
    return _GRPC[status]
