"""Trace and log settings as the ``TraceSetting`` and ``LogSettings`` rpcs read and update them.

Traces are not collected: the settings are stored and echoed (global ones and per-model
overrides), so tools that set them keep working. Log settings are applied to the ``kernel``
logger. Keys, value types and refusal messages are Triton 2.51's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kernel.errors import KernelError, Status
from kernel.log_settings import LogValue, log_level
from kernel.trace_settings import TRACE_DEFAULTS, TraceStore

__all__ = ["LogSettings", "TraceSettings"]

_TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_INTEGRAL = ("trace_rate", "trace_count", "log_frequency")


class TraceSettings:
    """Global trace settings and per-model overrides (stored, never acted on)."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store
        """The server's trace settings, shared with the HTTP endpoint."""

    def get(self, model: str = "") -> dict[str, list[str]]:
        return self._store.get(model)

    def update(self, model: str, updates: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """Apply ``updates`` (an empty list clears a setting); unknown keys are ignored.

        :raises KernelError: ``INVALID_ARG`` for a value the setting cannot take.
        """
        known = {key: values for key, values in updates.items() if key in TRACE_DEFAULTS}
        for key, values in known.items():
            for value in values:
                _check_trace_value(key, value)
        for key, values in known.items():
            self._store.set(model, key, values)
        return self.get(model)


def _check_trace_value(key: str, value: str) -> None:
    if key == "trace_level" and value not in _TRACE_LEVELS:
        raise KernelError(
            Status.INVALID_ARG,
            f"Attempting to set invalid trace setting :unsupported trace level '{value}'",
        )
    if key in _INTEGRAL:
        try:
            int(value)
        except ValueError:
            raise KernelError(
                Status.INVALID_ARG, f"Unable to parse '{key}', got: {value}"
            ) from None


# Each setting's value kind and the word Triton uses for it when refusing another kind.
_LOG_KINDS: dict[str, tuple[type, str]] = {
    "log_info": (bool, "boolean"),
    "log_warning": (bool, "boolean"),
    "log_error": (bool, "boolean"),
    "log_verbose_level": (int, "int32"),
    "log_format": (str, "string"),
    "log_file": (str, "string"),
}


class LogSettings:
    """Triton's six log settings; changes apply to the ``kernel`` logger's level."""

    def __init__(self, values: dict[str, LogValue], logger: str = "kernel") -> None:
        self._logger = logging.getLogger(logger)
        self.values = values
        """The server's settings (``server.log_settings``), shared with the HTTP endpoint."""

    def update(self, updates: Mapping[str, LogValue | None]) -> dict[str, LogValue]:
        """Apply ``updates`` (``None``: a value of no kind); unknown keys are ignored.

        :raises KernelError: ``INVALID_ARG`` for a value of the wrong kind or an unknown
            format, ``UNSUPPORTED`` for ``log_file`` (not settable over the network).
        """
        accepted: dict[str, LogValue] = {}
        for key, value in updates.items():
            expected = _LOG_KINDS.get(key)
            if expected is None:
                continue
            kind, kind_name = expected
            if value is None or type(value) is not kind:
                raise KernelError(Status.INVALID_ARG, f"expect {kind_name} for '{key}'")
            if key == "log_file":
                raise KernelError(
                    Status.UNSUPPORTED,
                    "log file location can not be updated through network protocol",
                )
            if key == "log_format" and value not in ("default", "ISO8601"):
                raise KernelError(
                    Status.INVALID_ARG, f"invalid argument for log_format, got: {value}"
                )
            accepted[key] = value
        if accepted:
            self.values.update(accepted)
            self._apply()
        return dict(self.values)

    def _apply(self) -> None:
        self._logger.setLevel(log_level(self.values))
