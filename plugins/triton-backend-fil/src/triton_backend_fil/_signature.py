"""The config's one input and one output against the loaded model, checked at load time.

A FIL model takes one FP32 input of ``features`` columns (``input__0``, dims ``[features]``
after the batch dimension) and gives one FP32 output (``output__0``) whose width follows the
FIL parameters (see ``_outputs``). A config that disagrees with the model fails the load,
naming the tensor, both sides, and the file and ``model_type`` the model was read from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kernel import KernelError, ModelConfig, Status
from kernel.config import DataType
from triton_backend_fil._settings import FilSettings


@dataclass(frozen=True, slots=True)
class ForestSignature:
    """What the loaded model takes and gives, in the config's terms."""

    features: int
    columns: int
    """The width of the output under the model's FIL parameters."""


@dataclass(frozen=True, slots=True)
class Tensors:
    """The names the config gives the model's input and output."""

    input: str
    output: str


def check_config(
    config: ModelConfig, signature: ForestSignature, path: Path, settings: FilSettings
) -> Tensors:
    """The input's and output's names once ``config`` agrees with the model.

    :raises KernelError: ``INVALID_ARG`` naming the tensor and what each side says.
    """
    model = config.name
    source = f"'{path}' (model_type '{settings.model_type}')"

    def fail(message: str) -> KernelError:
        return KernelError(Status.INVALID_ARG, f"unable to load model '{model}': {message}")

    if len(config.input) != 1 or len(config.output) != 1:
        raise fail(
            f"the FIL backend serves one input and one output (input__0, output__0), but the"
            f" configuration declares inputs {[t.name for t in config.input]} and outputs"
            f" {[t.name for t in config.output]}",
        )
    batching = config.max_batch_size > 0
    for kind, tensor in (("input", config.input[0]), ("output", config.output[0])):
        if tensor.data_type != DataType.TYPE_FP32:
            raise fail(
                f"{kind} '{tensor.name}' has datatype {tensor.data_type.name}, but FIL models"
                " take and give TYPE_FP32",
            )
    wanted = {
        "input": (config.input[0], signature.features, "features", "takes"),
        "output": (config.output[0], signature.columns, "columns", "gives"),
    }
    for kind, (tensor, width, unit, verb) in wanted.items():
        dims = list(tensor.dims)
        shape = "[" + ",".join(str(d) for d in ([-1, *dims] if batching else dims)) + "]"
        if len(dims) != (1 if batching else 2):
            layout = f"[{unit}]" if batching else f"[rows, {unit}]"
            raise fail(
                f"{kind} '{tensor.name}' has shape {shape} in the configuration, but with"
                f" max_batch_size {config.max_batch_size} FIL's {kind} dims are {layout}"
                f" (the model in {source} {verb} {width} {unit})",
            )
        if dims[-1] not in (width, -1):
            why = "" if kind == "input" else f" ({_output_reason(settings)})"
            raise fail(
                f"{kind} '{tensor.name}' has {dims[-1]} {unit} in the configuration (shape"
                f" {shape}), but the model in {source} {verb} {width}{why}",
            )
    return Tensors(input=config.input[0].name, output=config.output[0].name)


def _output_reason(settings: FilSettings) -> str:
    if settings.predict_proba:
        return "predict_proba: one probability per class, 2 for a binary classifier"
    if settings.output_class:
        return "output_class: one class label per row"
    return "no output_class: the model's scores, one column for a regressor"
