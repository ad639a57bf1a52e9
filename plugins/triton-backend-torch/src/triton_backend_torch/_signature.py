"""The model's forward against its config: the load-time checks, and auto-complete for
exported programs.

TorchScript records argument names but neither datatypes nor shapes, so a TorchScript model is
checked as Triton checks it: the config must give one input per forward argument (or any number
for a forward taking one dict), and output datatypes are checked when outputs come back.
An exported program records every tensor's datatype and shape, dynamic dims included, so its
config is checked tensor by tensor, and a config without inputs or outputs is completed from
it, as Triton's onnxruntime backend completes from an ONNX file: inputs named after the forward
arguments (or the input dict's keys), outputs ``OUTPUT__<index>`` (or the output dict's keys),
and ``max_batch_size`` plus an empty ``dynamic_batching`` when every tensor has a dynamic first
dimension. What the user wrote is never replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kernel import KernelError, ModelConfig, Status
from kernel.config import (
    DataType,
    ModelDynamicBatching,
    ModelInput,
    ModelOutput,
    ModelTensorReshape,
)
from triton_backend_torch._program import TensorSpec, TorchProgram
from triton_backend_torch._tensors import format_shape

DEFAULT_MAX_BATCH_SIZE = 4
"""Triton's ``default-max-batch-size`` backend config default."""


def auto_complete(
    config: ModelConfig, program: TorchProgram, default_max_batch_size: int
) -> ModelConfig:
    """Complete ``config`` from an exported program; returns it.

    :raises KernelError: ``INVALID_ARG`` when the model cannot batch but the config sets a
        ``max_batch_size``, or a tensor has a type Triton cannot carry.
    """
    if (config.input or config.batch_input) and config.output:
        return config
    assert program.inputs is not None and program.outputs is not None, "exported programs only"
    tensors = [*program.inputs, *program.outputs]
    if all(t.dims and t.dims[0] == -1 for t in tensors):
        if config.max_batch_size == 0:
            config.max_batch_size = max(default_max_batch_size, 0)
        if (
            config.max_batch_size > 1
            and config.dynamic_batching is None
            and config.sequence_batching is None
        ):
            config.dynamic_batching = ModelDynamicBatching()
    elif config.max_batch_size != 0:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{config.name}': model does not support batching while"
            " non-zero max_batch_size is specified",
        )
    batching = config.max_batch_size > 0
    if not config.input and not config.batch_input:
        config.input = [
            ModelInput(name=t.name, data_type=_data_type(config.name, t), **_dims(t, batching))
            for t in program.inputs
        ]
    if not config.output:
        config.output = [
            ModelOutput(name=t.name, data_type=_data_type(config.name, t), **_dims(t, batching))
            for t in program.outputs
        ]
    return config


def _data_type(model: str, tensor: TensorSpec) -> DataType:
    if tensor.config_type is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{model}': tensor '{tensor.name}' is a"
            f" {tensor.torch_type}, which no Triton datatype carries",
        )
    return DataType[tensor.config_type]


def _dims(tensor: TensorSpec, batching: bool) -> dict[str, Any]:
    """``dims`` (and ``reshape`` for a batched tensor that is only the batch dim), as Triton."""
    dims = list(tensor.dims)[1 if batching else 0 :]
    if dims:
        return {"dims": dims}
    if batching:
        return {"dims": [1], "reshape": ModelTensorReshape(shape=[])}
    return {"dims": [1]}


def check_input_count(config: ModelConfig, program: TorchProgram, implicit: int) -> None:
    """Refuse a config whose input count is not the forward's (Triton's check).

    :raises KernelError: ``INVALID_ARG`` with both counts.
    """
    expected = len(config.input) + implicit
    if not config.input:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}': model configuration must contain at least"
            " one input, none were specified (auto-complete reads only exported programs)",
        )
    if not config.output:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}': model configuration must contain at least"
            " one output, none were specified",
        )
    if not program.dict_input and len(program.forward_args) != expected:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}', configuration expects {expected} inputs,"
            f" model provides {len(program.forward_args)} (forward{list(program.forward_args)})",
        )


def check_tensors(
    config: ModelConfig,
    program: TorchProgram,
    inputs: Mapping[str, int],
    outputs: Mapping[str, int],
) -> None:
    """Refuse a config whose datatypes or shapes contradict an exported program's.

    ``inputs`` and ``outputs`` give each config tensor's position in the program's inputs and
    outputs (Triton's naming rules); dict-keyed tensors are found by name.

    :raises KernelError: ``INVALID_ARG`` naming the tensor and what each side says.
    """
    if program.inputs is None or program.outputs is None:
        return  # TorchScript: nothing recorded to compare with
    batching = config.max_batch_size > 0
    for kind, tensors, specs, positions, by_name in (
        ("input", config.input, program.inputs, inputs, program.dict_input),
        ("output", config.output, program.outputs, outputs, bool(program.dict_output)),
    ):
        for tensor in tensors:
            spec = _find(specs, tensor.name, positions.get(tensor.name), by_name)
            if spec is None:
                if by_name:
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"unable to load model '{config.name}', configuration expects {kind}"
                        f" '{tensor.name}', but the model has no such {kind} (model {kind}s:"
                        f" {[s.name for s in specs]})",
                    )
                continue  # a position past the end: reported when outputs come back
            expected = tensor.data_type.name
            if spec.config_type != expected:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{config.name}', configuration expects datatype"
                    f" {expected} for {kind} '{tensor.name}', model provides"
                    f" {spec.config_type or spec.torch_type}",
                )
            dims = list(tensor.reshape.shape if tensor.reshape is not None else tensor.dims)
            _check_dims(config.name, kind, tensor.name, spec.dims, dims, batching)


def _find(
    specs: Sequence[TensorSpec], name: str, position: int | None, by_name: bool
) -> TensorSpec | None:
    if by_name:
        return next((s for s in specs if s.name == name), None)
    if position is None or position >= len(specs):
        return None
    return specs[position]


def _check_dims(
    model: str, kind: str, name: str, model_dims: tuple[int, ...], config_dims: list[int],
    batching: bool,
) -> None:  # fmt: skip
    full = [-1, *config_dims] if batching else config_dims
    if not model_dims and all(d == 1 for d in config_dims) and not batching:
        return  # a scalar: the config carries it as [1]
    if batching and (not model_dims or model_dims[0] != -1):
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', {kind} '{name}': for the model to support batching"
            " the shape should have at least 1 dimension and the first dimension must be"
            f" dynamic; but the model expects shape {format_shape(model_dims)} and the model"
            f" configuration specifies {format_shape(full)} (max_batch_size > 0 adds the"
            " leading batch dimension)",
        )
    compatible = len(model_dims) == len(full) and all(
        m == c or m == -1 or c == -1 for m, c in zip(model_dims, full, strict=True)
    )
    if not compatible:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', {kind} '{name}': the model expects shape"
            f" {format_shape(model_dims)} but the model configuration specifies shape"
            f" {format_shape(full)}"
            + (" (the batch dimension, then its dims or reshape)" if batching else ""),
        )
