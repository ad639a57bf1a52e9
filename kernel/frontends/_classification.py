"""Triton's classification extension, for both frontends: an output's top-k entries as
``"value:index[:label]"`` BYTES items, labelled from the output's ``label_filename`` (read by
the request's :class:`~kernel._inference_target.InferenceTarget`, so labels follow a reload)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel.tensors import datatype_of

__all__ = ["classify"]

_BF16 = np.dtype(ml_dtypes.bfloat16)


def classify(
    array: npt.NDArray[Any], classes: int, batched: bool, labels: list[str], output: str
) -> npt.NDArray[Any]:
    """Top-``classes`` entries per batch row (of a batched output) as BYTES items.

    :raises KernelError: ``INVALID_ARG`` for an output that is not numeric.
    """
    if array.dtype.kind not in "biuf" and array.dtype != _BF16:
        raise KernelError(
            Status.INVALID_ARG,
            f"class result not available for output '{output}' due to unsupported type"
            f" '{datatype_of(array)}'",
        )
    batched = batched and array.ndim > 0
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
