"""Triton's trace settings, one store per server, shared by the HTTP and gRPC endpoints.

Traces are not collected: the settings are kept and echoed (global ones and per-model
overrides) so tools that set them keep working. Every value is stored as a list of strings, the
gRPC form; the HTTP endpoint converts at its edge.
"""

from __future__ import annotations

__all__ = ["TRACE_DEFAULTS", "TraceStore"]

TRACE_DEFAULTS: dict[str, list[str]] = {
    "trace_rate": ["1000"],
    "trace_mode": ["triton"],
    "trace_level": ["OFF"],
    "trace_file": [""],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
}


class TraceStore:
    """Global trace settings and per-model overrides."""

    def __init__(self) -> None:
        self._global = {key: list(value) for key, value in TRACE_DEFAULTS.items()}
        self._models: dict[str, dict[str, list[str]]] = {}

    def get(self, model: str = "") -> dict[str, list[str]]:
        """The settings in force for ``model`` (the global ones for ``""``)."""
        settings = {key: list(value) for key, value in self._global.items()}
        settings.update({k: list(v) for k, v in self._models.get(model, {}).items()})
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
            self._global[key] = list(values) if values else list(TRACE_DEFAULTS[key])
