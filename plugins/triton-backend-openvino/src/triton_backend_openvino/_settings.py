"""Triton's OpenVINO ``parameters``, read once per model and checked by name and value.

The keys and their meanings are those of Triton's openvino backend (its README and source):

* ``NUM_STREAMS``: ``AUTO``, ``NUMA`` or a number of streams >= 0.
* ``PERFORMANCE_HINT``: ``LATENCY``, ``THROUGHPUT`` or ``CUMULATIVE_THROUGHPUT``.
* ``INFERENCE_NUM_THREADS``: a number of threads >= 0 (0: OpenVINO's default, all cores).
* ``HINT_BF16``: ``YES`` runs in bfloat16 where the CPU can.
* ``ENABLE_BATCH_PADDING``: pad a batch smaller than a fixed batch dimension with zeros.
* ``RESHAPE_IO_LAYERS``: reshape the model's inputs to the config's dims.
* ``SKIP_OV_DYNAMIC_BATCHSIZE``: do not let OpenVINO batch infer requests automatically.

Values are case-insensitive; booleans are ``YES``/``NO`` (also true/false, on/off, 1/0).
A key this backend does not know is ignored with a warning naming it and the known keys, as
Triton's openvino backend ignores it (so a repository that serves there loads here). Unlike
Triton, which reads a misspelt ``YES`` as ``NO``, an invalid value of a known key fails the load
with ``INVALID_ARG`` naming it: a typo in a tuning knob should not silently change how a model
runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kernel import KernelError, ModelConfig, Status

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}

_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
_STREAM_NAMES = ("AUTO", "NUMA")

KNOWN_KEYS = (
    "NUM_STREAMS",
    "PERFORMANCE_HINT",
    "INFERENCE_NUM_THREADS",
    "HINT_BF16",
    "ENABLE_BATCH_PADDING",
    "RESHAPE_IO_LAYERS",
    "SKIP_OV_DYNAMIC_BATCHSIZE",
)


@dataclass(frozen=True, slots=True)
class OpenVinoSettings:
    """How one model is compiled and fed."""

    properties: dict[str, str] = field(default_factory=dict)
    """OpenVINO compile properties (``{"NUM_STREAMS": "2"}``), given to ``compile_model``."""
    batch_padding: bool = False
    reshape_io_layers: bool = False
    skip_dynamic_batch_size: bool = False


class _Reader:
    """Reads ``parameters`` values, naming the model and key in every error."""

    def __init__(self, config: ModelConfig) -> None:
        self.model = config.name
        self.values = {key: str(value.string_value) for key, value in config.parameters.items()}

    def refuse(self, key: str, expected: str) -> KernelError:
        return KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{self.model}': parameter '{key}' has the invalid value"
            f" '{self.values[key]}' (expected {expected})",
        )

    def count(self, key: str, names: tuple[str, ...] = ()) -> str | None:
        """A number >= 0, or one of ``names``; as OpenVINO reads it."""
        value = self.values.get(key)
        if value is None:
            return None
        text = value.strip().upper()
        if text in names:
            return text
        if text.isascii() and text.isdigit():
            return str(int(text))
        raise self.refuse(key, " or ".join([*names, "a number >= 0"]))

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.values.get(key)
        if value is None:
            return None
        if value.strip().upper() not in choices:
            raise self.refuse(key, "one of " + ", ".join(choices))
        return value.strip().upper()

    def boolean(self, key: str) -> bool:
        value = self.values.get(key)
        if value is None:
            return False
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.refuse(key, "YES or NO")


def read_settings(config: ModelConfig, logger: logging.Logger | None = None) -> OpenVinoSettings:
    """The settings a model's ``parameters`` ask for; an unknown key is logged to ``logger``
    (default: this module's) as ignored.

    :raises KernelError: ``INVALID_ARG`` naming a key whose value is invalid.
    """
    reader = _Reader(config)
    log = logger or logging.getLogger(__name__)
    for key in sorted(key for key in reader.values if key not in KNOWN_KEYS):
        log.warning(
            "model '%s': unknown parameter '%s' for the openvino backend is ignored (known: %s)",
            config.name,
            key,
            ", ".join(KNOWN_KEYS),
        )
    properties: dict[str, str] = {}
    streams = reader.count("NUM_STREAMS", _STREAM_NAMES)
    if streams is not None:
        properties["NUM_STREAMS"] = streams
    hint = reader.choice("PERFORMANCE_HINT", _HINTS)
    if hint is not None:
        properties["PERFORMANCE_HINT"] = hint
    threads = reader.count("INFERENCE_NUM_THREADS")
    if threads is not None:
        properties["INFERENCE_NUM_THREADS"] = threads
    if reader.boolean("HINT_BF16"):
        properties["INFERENCE_PRECISION_HINT"] = "bf16"
    return OpenVinoSettings(
        properties=properties,
        batch_padding=reader.boolean("ENABLE_BATCH_PADDING"),
        reshape_io_layers=reader.boolean("RESHAPE_IO_LAYERS"),
        skip_dynamic_batch_size=reader.boolean("SKIP_OV_DYNAMIC_BATCHSIZE"),
    )
