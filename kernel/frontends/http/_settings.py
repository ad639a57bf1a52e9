"""The trace and logging settings the HTTP API reads and updates (``/v2/trace/setting``,
``/v2/models/{name}/trace/setting``, ``/v2/logging``), with Triton's JSON shapes and checks.

Traces are not collected: trace settings are validated, stored and echoed, so clients and tools
that set them keep working. Log settings are applied to the ``kernel`` logger.
"""

from __future__ import annotations

import logging
from typing import Any

from kernel.errors import KernelError, Status
from kernel.log_settings import LogValue, log_level
from kernel.trace_settings import TRACE_DEFAULTS, TraceStore

__all__ = ["LogSettings", "TraceSettings"]

_TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_UINT32_MAX = 2**32 - 1
_INT32_MAX = 2**31 - 1


def _not_string() -> KernelError:
    return KernelError(Status.INTERNAL, "attempt to access JSON non-string as string")


def _parse_count(key: str, text: str, low: int, high: int) -> str:
    try:
        value = int(text.strip())
    except ValueError:
        raise KernelError(Status.INVALID_ARG, f"Unable to parse '{key}', got: {text}") from None
    if key == "trace_count" and value < low:
        raise KernelError(
            Status.INVALID_ARG,
            f"Unable to parse 'trace_count'. Expecting value >= {low}, got:{text}",
        )
    if not low <= value <= high:
        raise KernelError(
            Status.INVALID_ARG,
            f"Unable to parse '{key}', value is out of range [ {low}, {high} ], got: {text}",
        )
    return str(value)


class TraceSettings:
    """Global trace settings and per-model overrides."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store
        """The server's trace settings (lists of strings), shared with the gRPC endpoint."""

    def get(self, model: str = "") -> dict[str, Any]:
        """The settings as Triton's JSON has them: ``trace_level`` a list, the rest strings."""
        return {
            key: values if key == "trace_level" else (values[0] if values else "")
            for key, values in self._store.get(model).items()
        }

    def update(self, model: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (``None`` clears a setting) and return the resulting settings.

        :raises KernelError: for a value of the wrong type or out of range (nothing applied).
        """
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in TRACE_DEFAULTS or key == "trace_mode":
                continue
            if value is None:
                parsed[key] = None
            elif key == "trace_level":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise KernelError(Status.INTERNAL, "attempt to access JSON non-array as array")
                levels = [v for v in value if v in _TRACE_LEVELS]
                if "OFF" in levels and len(value) != 1:
                    raise KernelError(
                        Status.INVALID_ARG, "Expect only one trace level 'OFF' is specified"
                    )
                parsed[key] = levels or ["OFF"]
            elif not isinstance(value, str):
                raise _not_string()
            elif key == "trace_rate":
                parsed[key] = _parse_count(key, value, 0, _UINT32_MAX)
            elif key == "trace_count":
                parsed[key] = _parse_count(key, value, -1, _INT32_MAX)
            elif key == "log_frequency":
                parsed[key] = _parse_count(key, value, 0, _UINT32_MAX)
            else:
                parsed[key] = value
        for key, value in parsed.items():
            if value is None:
                self._store.set(model, key, None)
            else:
                self._store.set(model, key, value if isinstance(value, list) else [value])
        return self.get(model)


class LogSettings:
    """Triton's log settings, applied to the ``kernel`` logger."""

    def __init__(self, settings: dict[str, LogValue]) -> None:
        self._settings = settings
        """The server's settings (``server.log_settings``), shared with the gRPC endpoint."""
        self._file_handler: logging.Handler | None = None

    def get(self) -> dict[str, Any]:
        return dict(self._settings)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (``None`` leaves a setting as it is) and return the settings.

        :raises KernelError: for a value of the wrong type (nothing applied).
        """
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            if value is None or key not in self._settings:
                continue
            if key in ("log_info", "log_warning", "log_error"):
                if not isinstance(value, bool):
                    raise KernelError(
                        Status.INTERNAL, "attempt to access JSON non-boolean as boolean"
                    )
            elif key == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise KernelError(
                        Status.INTERNAL,
                        "attempt to access JSON non-unsigned-integer as unsigned-integer",
                    )
            elif not isinstance(value, str):
                raise _not_string()
            elif key == "log_format" and value not in ("default", "ISO8601"):
                raise KernelError(
                    Status.UNAVAILABLE, f"invalid argument for --log_format, got: {value}"
                )
            parsed[key] = value
        if "log_file" in parsed and parsed["log_file"] != self._settings["log_file"]:
            self._set_file(parsed["log_file"])
        self._settings.update(parsed)
        self._apply()
        return self.get()

    def _set_file(self, path: str) -> None:
        logger = logging.getLogger("kernel")
        handler: logging.Handler | None = None
        if path:
            try:
                handler = logging.FileHandler(path)
            except OSError as exc:
                raise KernelError(
                    Status.UNAVAILABLE, f"failed to open log file '{path}': {exc.strerror}"
                ) from None
        if self._file_handler is not None:
            logger.removeHandler(self._file_handler)
            self._file_handler.close()
        self._file_handler = handler
        if handler is not None:
            logger.addHandler(handler)

    def _apply(self) -> None:
        settings = self._settings
        logging.getLogger("kernel").setLevel(log_level(settings))
        if self._file_handler is not None:
            fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if settings["log_format"] == "ISO8601":
                formatter = logging.Formatter(fmt, "%Y-%m-%dT%H:%M:%SZ")
            else:
                formatter = logging.Formatter(fmt)
            self._file_handler.setFormatter(formatter)

    def close(self) -> None:
        """Detach the log file handler this object added, if any."""
        if self._file_handler is not None:
            logging.getLogger("kernel").removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
