"""``Logger``: a model's messages in the server log, at Triton's four levels."""

from __future__ import annotations

import enum
import logging
from typing import ClassVar

from triton_python_backend_utils._runtime import runtime_or_none

__all__ = ["LogLevel", "Logger", "python_log_level"]


class LogLevel(enum.IntEnum):
    """Triton's log levels (``VERBOSE`` shows with ``--log-verbose``)."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_PYTHON_LEVELS = {
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.VERBOSE: logging.DEBUG,
}
_outside = logging.getLogger("triton_python_backend_utils")
_Level = LogLevel


def python_log_level(level: int) -> int:
    """The :mod:`logging` level of a Triton log level."""
    return _PYTHON_LEVELS.get(LogLevel(level), logging.INFO)


class Logger:
    """Log from a model: ``pb_utils.Logger.log_info("...")`` (all methods are static)."""

    LogLevel: ClassVar[type[_Level]] = _Level
    INFO: ClassVar[_Level] = _Level.INFO
    WARNING: ClassVar[_Level] = _Level.WARNING
    ERROR: ClassVar[_Level] = _Level.ERROR
    VERBOSE: ClassVar[_Level] = _Level.VERBOSE

    @staticmethod
    def log(message: str, level: int = _Level.INFO) -> None:
        """Log ``message`` at ``level`` (``Logger.INFO`` unless given)."""
        runtime = runtime_or_none()
        if runtime is None:
            _outside.log(python_log_level(level), "%s", message)
        else:
            runtime.log(int(level), str(message))

    @staticmethod
    def log_info(message: str) -> None:
        Logger.log(message, _Level.INFO)

    @staticmethod
    def log_warn(message: str) -> None:
        Logger.log(message, _Level.WARNING)

    @staticmethod
    def log_error(message: str) -> None:
        Logger.log(message, _Level.ERROR)

    @staticmethod
    def log_verbose(message: str) -> None:
        Logger.log(message, _Level.VERBOSE)
