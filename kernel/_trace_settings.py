"""Triton's trace settings, one store per server, read and updated through both endpoints.

The tracer (:mod:`kernel._tracing`) takes the settings in force after every update; the
trace file comes only from the command line. Every value is stored as a list of strings, the
gRPC form; the HTTP endpoint converts at its edge. The rules for an update live here once, for
both endpoints; the trace file, like the log file, cannot be set from the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from kernel._errors import KernelError, Status

__all__ = ["FILE_NOT_SETTABLE", "TRACE_DEFAULTS", "TraceStore", "check_trace_update"]

TRACE_DEFAULTS: dict[str, list[str]] = {
    "trace_rate": ["1000"],
    "trace_mode": ["triton"],
    "trace_level": ["OFF"],
    "trace_file": [""],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
}

FILE_NOT_SETTABLE = "trace file location can not be updated through network protocol"
"""Triton's answer (``UNSUPPORTED``) to a request that sets ``trace_file``."""

_BSP_DEFAULTS = {
    "bsp_max_queue_size": "2048",
    "bsp_schedule_delay": "5000",
    "bsp_max_export_batch_size": "512",
}
"""The batch span processor settings OpenTelemetry mode shows when not given (Triton's)."""
_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_UINT32_MAX = 2**32 - 1
_INT32_MAX = 2**31 - 1
# The integral settings and their ranges.
_RANGES = {
    "trace_rate": (0, _UINT32_MAX),
    "trace_count": (-1, _INT32_MAX),
    "log_frequency": (0, _UINT32_MAX),
}


def _invalid(text: str) -> KernelError:
    return KernelError(Status.INVALID_ARG, text)


def _parse_count(key: str, text: str) -> str:
    low, high = _RANGES[key]
    try:
        value = int(text.strip())
    except ValueError:
        raise _invalid(f"Unable to parse '{key}', got: {text}") from None
    if key == "trace_count" and value < low:
        raise _invalid(f"Unable to parse 'trace_count'. Expecting value >= {low}, got:{text}")
    if not low <= value <= high:
        raise _invalid(
            f"Unable to parse '{key}', value is out of range [ {low}, {high} ], got: {text}"
        )
    return str(value)


def check_trace_update(changes: Mapping[str, list[str] | None]) -> dict[str, list[str] | None]:
    """The accepted form of an update (``None`` or ``[]`` clears a setting).

    Unknown keys and ``trace_mode`` (fixed to ``triton``) are ignored.

    :raises KernelError: ``UNSUPPORTED`` for ``trace_file``, ``INVALID_ARG`` for a value the
        setting cannot take.
    """
    parsed: dict[str, list[str] | None] = {}
    for key, values in changes.items():
        if key not in TRACE_DEFAULTS or key == "trace_mode":
            continue
        if not values:
            parsed[key] = None
        elif key == "trace_file":
            raise KernelError(Status.UNSUPPORTED, FILE_NOT_SETTABLE)
        elif key == "trace_level":
            for value in values:
                if value not in _LEVELS:
                    raise _invalid(
                        "Attempting to set invalid trace setting :unsupported trace level"
                        f" '{value}'"
                    )
            if "OFF" in values and len(values) != 1:
                raise _invalid("Expect only one trace level 'OFF' is specified")
            parsed[key] = list(values)
        else:
            if len(values) != 1:
                raise _invalid(f"expect only one value for '{key}', got {len(values)}")
            parsed[key] = [_parse_count(key, values[0])]
    return parsed


class TraceStore:
    """Global trace settings and per-model overrides."""

    def __init__(
        self,
        initial: Mapping[str, list[str]] | None = None,
        opentelemetry: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """``initial``: the command line's global settings (``--trace-config``);
        ``opentelemetry``: its ``opentelemetry,<key>=<value>`` pairs, in OpenTelemetry mode.

        In that mode the settings show as tritonserver's do: no ``trace_file`` or
        ``log_frequency``, but the OpenTelemetry settings given (the last ``resource``) and
        the batch span processor's, with their defaults."""
        self._shown: dict[str, list[str]] | None = None
        if opentelemetry is not None:
            self._shown = {key: [value] for key, value in _BSP_DEFAULTS.items()}
            self._shown.update({key: [value] for key, value in opentelemetry})
        self._global = {key: list(value) for key, value in TRACE_DEFAULTS.items()}
        self._global.update({key: list(value) for key, value in (initial or {}).items()})
        self._initial = {key: list(value) for key, value in self._global.items()}
        self._models: dict[str, dict[str, list[str]]] = {}
        self.listeners: list[Callable[[], None]] = []
        """Called after every accepted update (the tracer takes the new settings)."""

    def models(self) -> list[str]:
        """The models with settings of their own."""
        return [model for model, overrides in self._models.items() if overrides]

    def get(self, model: str = "") -> dict[str, list[str]]:
        """The settings in force for ``model`` (the global ones for ``""``)."""
        settings = {key: list(value) for key, value in self._global.items()}
        settings.update({k: list(v) for k, v in self._models.get(model, {}).items()})
        if self._shown is not None:
            del settings["trace_file"], settings["log_frequency"]
            settings.update({key: list(value) for key, value in self._shown.items()})
        return settings

    def set(self, model: str, key: str, values: list[str] | None) -> None:
        """Set one setting; ``None`` or ``[]`` clears a model's override or resets a global."""
        if model:
            overrides = self._models.setdefault(model, {})
            if values:
                overrides[key] = list(values)
            else:
                overrides.pop(key, None)
        else:
            self._global[key] = list(values) if values else list(self._initial[key])

    def update(self, model: str, changes: Mapping[str, list[str] | None]) -> dict[str, list[str]]:
        """Check ``changes`` (see :func:`check_trace_update`), apply them all, return the
        settings in force for ``model``."""
        for key, values in check_trace_update(changes).items():
            self.set(model, key, values)
        for listener in self.listeners:
            listener()
        return self.get(model)
