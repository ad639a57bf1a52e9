"""Triton's classification extension: an output's top-k entries as ``"value:index[:label]"``
BYTES items, labelled from the output's ``label_filename`` in the model folder."""

from __future__ import annotations

import weakref
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from kernel.errors import KernelError, Status
from kernel.models import ModelVersion
from kernel.tensors import datatype_of

__all__ = ["Labels", "classify"]

_BF16 = np.dtype(ml_dtypes.bfloat16)


class Labels:
    """Classification labels of outputs (their ``label_filename``), read once per loaded
    version and forgotten with it."""

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[ModelVersion, dict[str, list[str]]] = (
            weakref.WeakKeyDictionary()
        )

    def of(self, version: ModelVersion, output: str) -> list[str]:
        per_version = self._cache.get(version)
        if per_version is None:
            per_version = self._cache[version] = {}
        labels = per_version.get(output)
        if labels is None:
            labels = []
            for spec in version.config.output:
                if spec.name == output and spec.label_filename:
                    path = version.context.model_dir / spec.label_filename
                    try:
                        labels = path.read_text().splitlines()
                    except OSError:
                        labels = []
            per_version[output] = labels
        return labels


def classify(
    array: npt.NDArray[Any], classes: int, batched: bool, labels: list[str]
) -> npt.NDArray[Any]:
    """Top-``classes`` entries per batch row as ``"value:index[:label]"`` BYTES items."""
    if array.dtype.kind not in "biuf" and array.dtype != _BF16:
        raise KernelError(
            Status.INVALID_ARG,
            f"class result not available for output due to unsupported type '{datatype_of(array)}'",
        )
    rows = array.reshape(array.shape[0] if batched else 1, -1)
    k = min(classes, rows.shape[1])
    as_int = array.dtype.kind in "biu"
    out = np.empty((rows.shape[0], k), dtype=np.object_)
    for r, row in enumerate(rows):
        values = row.astype(np.float64)
        order = np.argsort(-values, kind="stable")[:k]
        for c, index in enumerate(order.tolist()):
            value = int(row[index]) if as_int else f"{float(values[index]):f}"
            text = f"{value}:{index}"
            if index < len(labels) and labels[index]:
                text += f":{labels[index]}"
            out[r, c] = text.encode()
    return out if batched else out.reshape(k)
