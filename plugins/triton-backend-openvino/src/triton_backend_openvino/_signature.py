"""The model's own signature against its config: auto-complete and the load-time check.

Auto-complete follows Triton's openvino backend: a model can batch when the layout of every
input and output names a batch dimension (``N``, e.g. ``N...`` or ``NCHW``); then a missing
``max_batch_size`` becomes the backend's default (4) and an empty ``dynamic_batching`` is added.
Models without layouts (an ONNX file, most converted IRs) keep ``max_batch_size: 0`` and their
full shapes. Missing inputs and outputs are filled from the model, each dynamic dim as ``-1``.
What the user wrote is never replaced. The check then refuses a config whose tensors the model
does not have or whose shapes contradict the model's, naming the tensor and both shapes.
Datatypes may differ: OpenVINO converts at the model's edge, as in Triton.
"""

from __future__ import annotations

import logging
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
from triton_backend_openvino._tensors import TensorInfo, format_shape

DEFAULT_MAX_BATCH_SIZE = 4
"""Triton's ``--backend-config=openvino,default-max-batch-size`` default."""


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """The tensors an ``ov.Model`` takes and gives, in the model's order."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @classmethod
    def of(cls, model: Any) -> ModelSignature:
        """The signature of an ``ov.Model`` (or ``ov.CompiledModel``)."""
        return cls(
            inputs=[TensorInfo.of(port) for port in model.inputs],
            outputs=[TensorInfo.of(port) for port in model.outputs],
        )

    @staticmethod
    def find(tensors: Sequence[TensorInfo], name: str) -> TensorInfo | None:
        """The tensor answering to ``name`` (a port may carry several names)."""
        return next((t for t in tensors if name in t.names), None)


def auto_complete(
    config: ModelConfig,
    signature: ModelSignature,
    default_max_batch_size: int,
    logger: logging.Logger,
) -> ModelConfig:
    """Complete ``config`` from the model, as Triton's openvino backend does; returns it.

    Runs only when the config lacks inputs or outputs: a complete config is the user's word
    (Triton would also raise ``max_batch_size: 0`` to the default there, which turns the
    user's full shapes into batched ones).

    :raises KernelError: ``INVALID_ARG`` when a tensor to fill in has a type this backend
        cannot carry or a dynamic rank.
    """
    if (config.input or config.batch_input) and config.output:
        return config
    tensors = [*signature.inputs, *signature.outputs]
    if tensors and all(t.batch_layout for t in tensors):
        if config.max_batch_size == 0:
            config.max_batch_size = max(default_max_batch_size, 1)
            logger.warning(
                "autofilled max_batch_size to %d for model '%s' since batching is supported"
                " but no max_batch_size is specified in model configuration",
                config.max_batch_size,
                config.name,
            )
        if (
            config.max_batch_size > 1
            and config.dynamic_batching is None
            and config.sequence_batching is None
        ):
            config.dynamic_batching = ModelDynamicBatching()
    elif config.max_batch_size != 0:
        logger.warning(
            "model layout for model '%s' does not name a batch dimension while non-zero"
            " max_batch_size is specified",
            config.name,
        )
    if not config.input and not config.batch_input:
        config.input = [
            ModelInput(name=t.name, data_type=_data_type(config.name, t), **_dims(config, t))
            for t in signature.inputs
        ]
    if not config.output:
        config.output = [
            ModelOutput(name=t.name, data_type=_data_type(config.name, t), **_dims(config, t))
            for t in signature.outputs
        ]
    return config


def _data_type(model: str, tensor: TensorInfo) -> DataType:
    name = tensor.config_type
    if name is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{model}': tensor '{tensor.name}' has the OpenVINO"
            f" element type {tensor.element}, which this backend carries in no Triton datatype",
        )
    return DataType[name]


def _dims(config: ModelConfig, tensor: TensorInfo) -> dict[str, Any]:
    """``dims`` (and ``reshape`` for a scalar or a batch-only tensor), as Triton writes them."""
    if tensor.dims is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{config.name}': tensor '{tensor.name}' has a dynamic"
            " rank; give its dims in config.pbtxt",
        )
    batching = config.max_batch_size > 0
    dims = list(tensor.dims)[1 if batching else 0 :]
    if dims:
        return {"dims": dims}
    return {"dims": [1], "reshape": ModelTensorReshape(shape=[])}


def check_config(config: ModelConfig, signature: ModelSignature, implicit: set[str]) -> None:
    """Refuse a config that contradicts the model (``implicit``: sequence control/state inputs).

    :raises KernelError: ``INVALID_ARG`` naming the tensor and what each side says.
    """
    model = config.name
    declared = {t.name for t in config.input} | implicit
    undeclared = [t.name for t in signature.inputs if not (t.names & declared)]
    if undeclared:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', configuration expects {len(declared)} inputs,"
            f" model provides {len(signature.inputs)}: model input(s) {undeclared} are missing"
            " from the configuration",
        )
    for kind, tensors, found in (
        ("input", config.input, signature.inputs),
        ("output", config.output, signature.outputs),
    ):
        for tensor in tensors:
            info = ModelSignature.find(found, tensor.name)
            if info is None:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{model}', configuration expects {kind}"
                    f" '{tensor.name}', but the model has no such {kind} (model {kind}s:"
                    f" {sorted(t.name for t in found)})",
                )
            dims = list(tensor.reshape.shape if tensor.reshape is not None else tensor.dims)
            check_dims(model, kind, tensor.name, info.dims, dims, config.max_batch_size > 0)


def check_dims(
    model: str,
    kind: str,
    name: str,
    model_dims: tuple[int, ...] | None,
    config_dims: list[int],
    batching: bool,
) -> None:
    """Refuse config dims the model cannot take, as Triton compares them: a dynamic model dim
    takes any config dim, a fixed one only itself (a config ``-1`` there would let requests in
    that the model refuses). With batching, the model's first dim is the batch dim, whatever
    its size: a fixed one is set to ``max_batch_size``.

    :raises KernelError: ``INVALID_ARG`` naming the tensor and both shapes.
    """
    if model_dims is None:
        return  # the model does not say its rank: nothing to contradict
    if not model_dims and not batching and all(d == 1 for d in config_dims):
        return  # a scalar, which the config writes as [1]
    full = [-1, *config_dims] if batching else config_dims
    rest = model_dims[1:] if batching else model_dims
    if len(model_dims) != len(full) or any(
        m not in (-1, c) for m, c in zip(rest, config_dims, strict=True)
    ):
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', {kind} '{name}': the model expects shape"
            f" {format_shape(model_dims)} but the model configuration specifies shape"
            f" {format_shape(full)}"
            + (" (max_batch_size > 0 adds the leading batch dimension)" if batching else ""),
        )
