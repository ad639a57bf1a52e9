"""Triton's FIL model-config ``parameters``, read once per model and checked by name.

Names, values and defaults are those of Triton's FIL backend (its ``docs/model_config.md`` and
source): ``model_type`` (``xgboost``, ``xgboost_json``, ``xgboost_ubj``, ``lightgbm``,
``treelite_checkpoint``; default ``xgboost``), ``output_class`` (renamed ``is_classifier`` in
FIL 25.09; both are read), ``predict_proba``, ``threshold`` (default 0.5), ``cpu_nthread``
(default -1: every core) and ``xgboost_allow_unknown_field``. Parameters that only steer FIL's
GPU kernels are accepted and ignored with one log line. A known parameter with a value FIL
would refuse fails the load with an ``INVALID_ARG`` error naming the parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kernel import KernelError, ModelConfig, Status

MODEL_FILES: dict[str, str] = {
    "xgboost": "xgboost.model",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "lightgbm": "model.txt",
    "treelite_checkpoint": "checkpoint.tl",
}
"""Each ``model_type`` and FIL's default file name for it."""

GPU_ONLY_PARAMETERS = (
    "algo",
    "blocks_per_sm",
    "chunk_size",
    "layout",
    "storage_type",
    "threads_per_tree",
    "transfer_threshold",
    "use_experimental_optimizations",
)
"""FIL parameters that tune its GPU kernels or memory layout: they never change a prediction."""

_TRUE = {"true", "1", "on"}
_FALSE = {"false", "0", "off"}


@dataclass(frozen=True, slots=True)
class FilSettings:
    """How one model's file is read and its predictions are shaped."""

    model_type: str = "xgboost"
    output_class: bool = False
    """A classifier: answer class labels (or, with ``predict_proba``, probabilities)."""
    predict_proba: bool = False
    """One probability column per class (two for a binary classifier)."""
    threshold: float = 0.5
    """A binary classifier's decision threshold: class 1 when the score exceeds it."""
    threads: int = -1
    """``cpu_nthread``: threads per prediction; -1 (or 0) lets each library use every core."""
    allow_unknown_field: bool = False
    ignored: tuple[str, ...] = ()
    """The GPU-only parameters the config sets (logged once, otherwise ignored)."""

    @property
    def default_file(self) -> str:
        """FIL's file name for ``model_type``."""
        return MODEL_FILES[self.model_type]


class _Reader:
    def __init__(self, config: ModelConfig) -> None:
        self.model = config.name
        self.values = {key: p.string_value.strip() for key, p in config.parameters.items()}

    def error(self, key: str, value: str, expected: str) -> KernelError:
        return KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{self.model}': parameter '{key}' has the invalid value"
            f" '{value}' (expected {expected})",
        )

    def boolean(self, key: str) -> bool | None:
        value = self.values.get(key)
        if value is None or value == "":
            return None
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self.error(key, value, "true or false")

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if value is None or value == "":
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise self.error(key, value, "a number")
        return number

    def integer(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise self.error(key, value, "an integer") from None


def read_settings(config: ModelConfig, folder: Path) -> FilSettings:
    """The FIL settings of ``config``, a model whose files are in ``folder``.

    :raises KernelError: ``INVALID_ARG`` naming the parameter whose value FIL would refuse.
    """
    reader = _Reader(config)
    model_type = reader.values.get("model_type") or "xgboost"
    if model_type not in MODEL_FILES:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}': parameter 'model_type' has the invalid value"
            f" '{model_type}', so the model file in '{folder}' cannot be read (expected"
            f" {', '.join(MODEL_FILES)})",
        )
    output_class = reader.boolean("output_class")
    is_classifier = reader.boolean("is_classifier")
    if output_class is not None and is_classifier is not None and output_class != is_classifier:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}': parameters 'output_class' and"
            " 'is_classifier' (its newer name) disagree",
        )
    threshold = reader.number("threshold")
    threads = reader.integer("cpu_nthread")
    if threads is not None and threads < -1:
        raise reader.error("cpu_nthread", str(threads), "-1 for every core, or a count >= 1")
    return FilSettings(
        model_type=model_type,
        output_class=bool(output_class if output_class is not None else is_classifier),
        predict_proba=bool(reader.boolean("predict_proba")),
        threshold=0.5 if threshold is None else threshold,
        threads=-1 if threads is None or threads == 0 else threads,
        allow_unknown_field=bool(reader.boolean("xgboost_allow_unknown_field")),
        ignored=tuple(key for key in GPU_ONLY_PARAMETERS if key in reader.values),
    )
