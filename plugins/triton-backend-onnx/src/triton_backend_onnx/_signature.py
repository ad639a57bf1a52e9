"""The model's own signature against its config: auto-complete and the load-time check.

Both follow Triton's onnxruntime backend. Auto-complete runs only when the config lacks inputs
or outputs; it fills the missing list from the model and sets ``max_batch_size`` (plus an empty
``dynamic_batching``) when every input and output has a dynamic first dimension. What the user
wrote is never replaced. The check then refuses a config whose tensors the model does not have,
or whose datatypes or shapes contradict the model's, naming the tensor and both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernel import KernelError, ModelConfig, Status
from kernel.config import (
    DataType,
    ModelDynamicBatching,
    ModelInput,
    ModelOutput,
    ModelTensorReshape,
)
from triton_backend_onnx._tensors import TensorInfo, format_shape, tensor_info

DEFAULT_MAX_BATCH_SIZE = 4
"""Triton's ``--backend-config=onnxruntime,default-max-batch-size`` default."""


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """The tensors an ONNX session takes and gives, in the model's order."""

    inputs: dict[str, TensorInfo]
    initializers: dict[str, TensorInfo]
    """Overridable initializers: inputs a request may, but need not, supply."""
    outputs: dict[str, TensorInfo]

    @classmethod
    def of(cls, session: Any) -> ModelSignature:
        """The signature of an ``onnxruntime.InferenceSession``."""
        return cls(
            inputs={i.name: i for i in map(tensor_info, session.get_inputs())},
            initializers={
                i.name: i for i in map(tensor_info, session.get_overridable_initializers())
            },
            outputs={o.name: o for o in map(tensor_info, session.get_outputs())},
        )


def _batchable(tensors: Sequence[TensorInfo]) -> bool:
    return all(t.dims is not None and len(t.dims) > 0 and t.dims[0] == -1 for t in tensors)


def auto_complete(
    config: ModelConfig, signature: ModelSignature, default_max_batch_size: int
) -> ModelConfig:
    """Complete ``config`` from the model, as Triton's onnxruntime backend does; returns it.

    :raises KernelError: ``INVALID_ARG`` when the model cannot batch but the config sets a
        ``max_batch_size``, or a model tensor has a type Triton cannot carry.
    """
    if (config.input or config.batch_input) and config.output:
        return config  # Triton skips auto-complete when both lists are given
    tensors = [*signature.inputs.values(), *signature.outputs.values()]
    if _batchable(tensors):
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
            for t in signature.inputs.values()
        ]
    if not config.output:
        config.output = [
            ModelOutput(name=t.name, data_type=_data_type(config.name, t), **_dims(t, batching))
            for t in signature.outputs.values()
        ]
    return config


def _data_type(model: str, tensor: TensorInfo) -> DataType:
    name = tensor.config_type
    if name is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{model}': tensor '{tensor.name}' has the ONNX type"
            f" {tensor.ort_type}, which no Triton datatype carries",
        )
    return DataType[name]


def _dims(tensor: TensorInfo, batching: bool) -> dict[str, Any]:
    """``dims`` (and ``reshape`` for a batched tensor that is only the batch dim), as Triton."""
    dims = list(tensor.dims or ())[1 if batching else 0 :]
    if dims:
        return {"dims": dims}
    if batching:
        return {"dims": [1], "reshape": ModelTensorReshape(shape=[])}
    return {"dims": [1]}


def check_config(config: ModelConfig, signature: ModelSignature, implicit: set[str]) -> None:
    """Refuse a config that contradicts the model (``implicit``: sequence control/state inputs).

    :raises KernelError: ``INVALID_ARG`` naming the tensor and what each side says.
    """
    model = config.name
    batching = config.max_batch_size > 0
    accepted = {**signature.inputs, **signature.initializers}
    declared = {t.name for t in config.input} | implicit
    undeclared = [name for name in signature.inputs if name not in declared]
    if undeclared:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', configuration expects {len(declared)} inputs,"
            f" model provides {len(signature.inputs)}: model input(s) {undeclared} are missing"
            " from the configuration",
        )
    for kind, tensors, found in (
        ("input", config.input, accepted),
        ("output", config.output, signature.outputs),
    ):
        for tensor in tensors:
            info = found.get(tensor.name)
            if info is None:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{model}', configuration expects {kind}"
                    f" '{tensor.name}', but the model has no such {kind} (model {kind}s:"
                    f" {sorted(found)})",
                )
            expected_type = tensor.data_type.name
            if info.config_type != expected_type:
                provides = info.config_type or info.ort_type
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{model}', configuration expects datatype"
                    f" {expected_type} for {kind} '{tensor.name}', model provides {provides}",
                )
            dims = list(tensor.reshape.shape if tensor.reshape is not None else tensor.dims)
            _check_dims(model, kind, tensor.name, info.dims, dims, batching)


def _check_dims(
    model: str,
    kind: str,
    name: str,
    model_dims: tuple[int, ...] | None,
    config_dims: list[int],
    batching: bool,
) -> None:
    if model_dims is None:
        return  # the model does not say its rank: nothing to contradict
    if not model_dims:
        # A scalar model tensor: Triton allows only 1s in the config (the kernel carries [1]).
        if any(d != 1 for d in config_dims):
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{model}', scalar tensor '{name}' should only provide 1"
                f" in the model configuration; the model expects shape [] but the model"
                f" configuration specifies {format_shape(config_dims)}",
            )
        return
    full = [-1, *config_dims] if batching else config_dims
    if batching and model_dims[0] != -1:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', {kind} '{name}': for the model to support batching"
            " the shape should have at least 1 dimension and the first dimension must be -1;"
            f" but the model expects shape {format_shape(model_dims)} and the model"
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
