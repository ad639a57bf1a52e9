"""Triton's six log settings, one set per server, read and updated through both endpoints.

The rules for an update live here once: each endpoint turns its wire form (JSON or protobuf)
into Python values and words a value of the wrong kind in its protocol's terms (the
``wrong_kind`` callback); everything else -- which keys exist, what they may hold, that the log
file cannot be set from the network at all -- is decided here, for both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from kernel._errors import KernelError, Status
from kernel._log_output import apply_log_settings

__all__ = [
    "FILE_NOT_SETTABLE",
    "LogSettings",
    "LogValue",
    "WrongKind",
    "check_log_format",
    "default_log_settings",
    "log_level",
]

LogValue = bool | int | str

WrongKind = Callable[[str, str], KernelError]
"""``wrong_kind(key, kind)``: the endpoint's error for a value that is not of ``kind``
(``"boolean"``, ``"unsigned-integer"``, ``"string"`` or ``"array"``)."""

FILE_NOT_SETTABLE = "log file location can not be updated through network protocol"
"""Triton's answer (``UNSUPPORTED``) to a request that sets ``log_file``: a file path from the
network would let any client create and append to files the server can write."""

_FORMATS = ("default", "ISO8601", "json")
_KINDS: dict[str, tuple[type, str]] = {
    "log_info": (bool, "boolean"),
    "log_warning": (bool, "boolean"),
    "log_error": (bool, "boolean"),
    "log_verbose_level": (int, "unsigned-integer"),
    "log_format": (str, "string"),
}


def default_log_settings(verbose: int = 0) -> dict[str, LogValue]:
    """tritonserver's defaults, with ``--log-verbose``."""
    return {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": verbose,
        "log_format": "default",
    }


def check_log_format(value: str) -> str:
    """``value`` if it is a log format this server writes (Triton's two, and ``json``).

    :raises KernelError: ``INVALID_ARG`` in Triton's words.
    """
    if value not in _FORMATS:
        raise KernelError(Status.INVALID_ARG, f"invalid argument for log_format, got: {value}")
    return value


def log_level(settings: Mapping[str, LogValue]) -> int:
    """The ``logging`` level the settings mean for the ``kernel`` logger."""
    if settings["log_verbose_level"]:
        return logging.DEBUG
    if settings["log_info"]:
        return logging.INFO
    if settings["log_warning"]:
        return logging.WARNING
    if settings["log_error"]:
        return logging.ERROR
    return logging.CRITICAL + 1


class LogSettings:
    """The server's log settings; an accepted update applies to the ``kernel`` logger and to
    the log output ``kernel serve`` installed (format and enabled levels)."""

    def __init__(
        self,
        verbose: int = 0,
        logger: str = "kernel",
        *,
        initial: Mapping[str, LogValue] | None = None,
    ) -> None:
        """``initial``: the command line's settings (``--log-file``, ``--log-info``, ...)."""
        self.values = default_log_settings(verbose)
        if initial:
            self.values.update(initial)
        self._logger = logging.getLogger(logger)
        if initial:
            self._logger.setLevel(log_level(self.values))

    def get(self) -> dict[str, LogValue]:
        return dict(self.values)

    def update(self, changes: Mapping[str, object], wrong_kind: WrongKind) -> dict[str, LogValue]:
        """Check every change, then apply them all (or none); returns the settings.

        ``None`` leaves a setting as it is; unknown keys are ignored, as in Triton.

        :raises KernelError: ``UNSUPPORTED`` for ``log_file``, ``wrong_kind``'s error for a
            value of the wrong kind, ``INVALID_ARG`` for a format Triton does not know.
        """
        accepted: dict[str, LogValue] = {}
        for key, value in changes.items():
            if key == "log_file":
                if value is not None:
                    raise KernelError(Status.UNSUPPORTED, FILE_NOT_SETTABLE)
                continue
            expected = _KINDS.get(key)
            if expected is None or value is None:
                continue
            kind, kind_name = expected
            if type(value) is not kind or (isinstance(value, int) and value < 0):
                raise wrong_kind(key, kind_name)
            assert isinstance(value, bool | int | str)
            if key == "log_format":
                assert isinstance(value, str)
                check_log_format(value)
            accepted[key] = value
        if accepted:
            self.values.update(accepted)
            self._logger.setLevel(log_level(self.values))
            apply_log_settings(self.values)
        return self.get()
