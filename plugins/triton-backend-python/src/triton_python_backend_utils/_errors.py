"""The two error types of the Python backend API.

``TritonError`` is a value a model puts into a response (``InferenceResponse(error=...)``);
``TritonModelException`` is an exception a model raises (or the API raises at the model).
The numeric codes are Triton's ``TRITONSERVER_Error_Code`` values.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ERROR_CODE_NAMES", "TritonError", "TritonModelException"]

ERROR_CODE_NAMES: tuple[str, ...] = (
    "UNKNOWN",
    "INTERNAL",
    "NOT_FOUND",
    "INVALID_ARG",
    "UNAVAILABLE",
    "UNSUPPORTED",
    "ALREADY_EXISTS",
    "CANCELLED",
)
"""Code names by number (``TRITONSERVER_ERROR_UNKNOWN`` = 0 ...)."""


class TritonError:
    """An error answered to one request: a message and a Triton error code."""

    __slots__ = ("_code", "_message")

    UNKNOWN: ClassVar[int] = 0
    INTERNAL: ClassVar[int] = 1
    NOT_FOUND: ClassVar[int] = 2
    INVALID_ARG: ClassVar[int] = 3
    UNAVAILABLE: ClassVar[int] = 4
    UNSUPPORTED: ClassVar[int] = 5
    ALREADY_EXISTS: ClassVar[int] = 6
    CANCELLED: ClassVar[int] = 7

    def __init__(self, message: str, code: int = 1) -> None:
        if message is None:
            raise TypeError("TritonError(): 'message' must be a string")
        if not 0 <= int(code) < len(ERROR_CODE_NAMES):
            raise ValueError(f"TritonError(): unknown error code {code}")
        self._message = str(message)
        self._code = int(code)

    def message(self) -> str:
        """The error message."""
        return self._message

    def code(self) -> int:
        """The error code (``TritonError.INTERNAL`` unless given)."""
        return self._code

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {ERROR_CODE_NAMES[self._code]})"


class TritonModelException(Exception):  # noqa: N818 - Triton's name
    """Raised by a model (or by this API at the model) to fail the current call."""

    def message(self) -> str:
        """The exception message."""
        return str(self.args[0]) if self.args else ""
