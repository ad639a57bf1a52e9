"""OpenAI's error answers: the JSON shape, the HTTP statuses, and the kernel's errors mapped once.

OpenAI answers every failure as ``{"error": {"message", "type", "param", "code"}}``; its clients
raise ``BadRequestError`` (400), ``AuthenticationError`` (401), ``NotFoundError`` (404), ... from
the status and show ``message``. A kernel error (unknown model, inputs the model refuses, queue
full) keeps its message and gets the HTTP status the kernel's own endpoints give it.
"""

from __future__ import annotations

from typing import Any

from kernel import KernelError, Status

__all__ = ["OpenAIError", "from_kernel_error"]


class OpenAIError(Exception):
    """A failure answered with OpenAI's error JSON and ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code

    def __repr__(self) -> str:
        return f"OpenAIError({self.status}, {self.message!r})"

    def body(self) -> dict[str, Any]:
        """The JSON object OpenAI answers (also the data of an SSE error event)."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


# The kernel's table (kernel._errors.STATUS_TABLE) for the statuses a request can meet, with
# OpenAI's error types: 4xx are the client's ("invalid_request_error"), 5xx the server's.
_STATUSES: dict[Status, tuple[int, str]] = {
    Status.NOT_FOUND: (404, "invalid_request_error"),
    Status.INVALID_ARG: (400, "invalid_request_error"),
    Status.UNKNOWN: (400, "invalid_request_error"),
    Status.ALREADY_EXISTS: (400, "invalid_request_error"),
    Status.CANCELLED: (400, "invalid_request_error"),
    Status.FAILED_PRECONDITION: (409, "invalid_request_error"),
    Status.TOO_LARGE: (413, "invalid_request_error"),
    Status.UNAVAILABLE: (503, "server_error"),
    Status.UNSUPPORTED: (501, "server_error"),
    Status.INTERNAL: (500, "server_error"),
}


def from_kernel_error(error: KernelError, model: str = "") -> OpenAIError:
    """``error`` as OpenAI answers it. An unknown model gets OpenAI's wording and code."""
    status, kind = _STATUSES.get(error.status, (500, "server_error"))
    if error.status is Status.NOT_FOUND and model:
        return OpenAIError(
            404,
            f"The model `{model}` does not exist ({error.message})",
            param="model",
            code="model_not_found",
        )
    return OpenAIError(status, error.message, kind=kind)
