"""Train the tree model of ``examples/model_repository`` and write it as Triton's FIL serves it.

    python examples/build_fil_models.py [REPOSITORY]

* ``fil_xgboost``: an XGBoost binary classifier (10 trees of depth 3) over 4 FP32 features,
  trained on synthetic rows (class 1 when ``x0 + x1 * x2 > 0``), saved as XGBoost JSON
  (``1/xgboost.json``, ``model_type: "xgboost_json"``) and configured with
  ``predict_proba: "true"``: ``output__0`` holds the two class probabilities.

The file is a few kilobytes and byte-for-byte reproducible: a fixed seed and one thread make
rerunning rewrite the same bytes. Needs ``xgboost`` (``pip install triton-backend-fil``, which
also serves it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xgboost

FEATURES = 4

CONFIG = """\
name: "fil_xgboost"
backend: "fil"
max_batch_size: 256
input [
  {
    name: "input__0"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
output [
  {
    name: "output__0"
    data_type: TYPE_FP32
    dims: [ 2 ]
  }
]
instance_group [ { kind: KIND_CPU } ]
parameters [
  {
    key: "model_type"
    value: { string_value: "xgboost_json" }
  },
  {
    key: "output_class"
    value: { string_value: "true" }
  },
  {
    key: "predict_proba"
    value: { string_value: "true" }
  },
  {
    key: "cpu_nthread"
    value: { string_value: "1" }
  }
]
dynamic_batching { }
"""


def train() -> xgboost.Booster:
    """The classifier, trained on 500 synthetic rows."""
    rng = np.random.default_rng(2024)
    x = rng.standard_normal((500, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int32)
    classifier = xgboost.XGBClassifier(
        n_estimators=10, max_depth=3, learning_rate=0.3, n_jobs=1, random_state=0
    )
    classifier.fit(x, y)
    return classifier.get_booster()


def build(repository: Path) -> list[Path]:
    """Write ``fil_xgboost`` (config and ``1/xgboost.json``) under ``repository``."""
    folder = repository / "fil_xgboost"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(CONFIG)
    (folder / "1" / "xgboost.json").write_bytes(bytes(train().save_raw("json")))
    return [folder]


def main(argv: list[str]) -> int:
    repository = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "model_repository"
    for folder in build(repository):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
