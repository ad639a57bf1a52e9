"""Build the PyTorch example models of ``examples/model_repository`` with torch.

    python examples/build_torch_models.py [REPOSITORY]

* ``torch_add_sub``: a scripted TorchScript module (``model.pt``), INPUT__0 + INPUT__1 ->
  OUTPUT__0, INPUT__0 - INPUT__1 -> OUTPUT__1, FP32 [16] with a dynamic batch dimension
  (``max_batch_size: 8``): Triton's ``simple`` with Triton's ``<name>__<index>`` names.
* ``torch_classifier``: a PyTorch 2 exported program (``model.pt2``), x [batch, 4] ->
  OUTPUT__0 [batch, 3] class probabilities from a two-layer network with fixed weights.

Both files are a few kilobytes and byte-for-byte reproducible with the same torch. Serving them
needs only ``triton-backend-torch``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

ADD_SUB_CONFIG = """\
name: "torch_add_sub"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  {
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ 16 ]
  },
  {
    name: "INPUT__1"
    data_type: TYPE_FP32
    dims: [ 16 ]
  }
]
output [
  {
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 16 ]
  },
  {
    name: "OUTPUT__1"
    data_type: TYPE_FP32
    dims: [ 16 ]
  }
]
dynamic_batching { }
"""

CLASSIFIER_CONFIG = """\
name: "torch_classifier"
backend: "pytorch"
default_model_filename: "model.pt2"
max_batch_size: 16
input [
  {
    name: "x"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
output [
  {
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 3 ]
  }
]
dynamic_batching { }
"""


class AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=1)


def build(repository: Path) -> list[Path]:
    """Write both models (config and ``1/model.pt`` / ``1/model.pt2``) under ``repository``."""
    add_sub = repository / "torch_add_sub"
    (add_sub / "1").mkdir(parents=True, exist_ok=True)
    (add_sub / "config.pbtxt").write_text(ADD_SUB_CONFIG)
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit in favour of torch.export; Triton still serves it.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(AddSub()), str(add_sub / "1" / "model.pt"))

    classifier = repository / "torch_classifier"
    (classifier / "1").mkdir(parents=True, exist_ok=True)
    (classifier / "config.pbtxt").write_text(CLASSIFIER_CONFIG)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        Classifier().eval(), (torch.zeros(2, 4),), dynamic_shapes=[{0: batch}]
    )
    torch.export.save(program, str(classifier / "1" / "model.pt2"))
    return [add_sub, classifier]


def main(argv: list[str]) -> int:
    repository = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "model_repository"
    for folder in build(repository):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
