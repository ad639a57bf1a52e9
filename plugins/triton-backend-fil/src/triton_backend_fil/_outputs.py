"""FIL's output shapes: what ``output_class``, ``predict_proba`` and ``threshold`` make of the
framework's scores.

The scores come as rows x k (k = 1 for a regressor or a binary classifier that scores the
positive class, k = classes otherwise; scikit-learn's binary forests give k = 2). FIL answers:

* ``predict_proba``: one probability column per class; a binary classifier gets two,
  ``1 - p`` and ``p``.
* ``output_class`` (without ``predict_proba``): one column of class labels, as FP32. A binary
  classifier's label is 1 where the positive class's score exceeds ``threshold``; a multi-class
  one's is the class with the highest score.
* neither: the scores themselves (one column for a regressor).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from triton_backend_fil._settings import FilSettings


def output_columns(classes: int, settings: FilSettings) -> int:
    """The width of ``output__0`` for a model whose scores have ``classes`` columns."""
    if settings.predict_proba:
        return max(classes, 2)
    if settings.output_class:
        return 1
    return classes


def shape_output(scores: npt.NDArray[Any], settings: FilSettings) -> npt.NDArray[np.float32]:
    """The FP32 output FIL answers for ``scores`` (rows x k)."""
    classes = scores.shape[1]
    if settings.predict_proba:
        if classes == 1:
            positive = scores[:, 0]
            return np.stack([1.0 - positive, positive], axis=1).astype(np.float32)
        return np.ascontiguousarray(scores, dtype=np.float32)
    if settings.output_class:
        if classes <= 2:
            positive = scores[:, classes - 1]
            labels = positive > settings.threshold
        else:
            labels = np.argmax(scores, axis=1)
        return labels.astype(np.float32).reshape(-1, 1)
    return np.ascontiguousarray(scores, dtype=np.float32)
