"""From a model file to a compiled model: find the file, read it, shape it to the config, compile.

OpenVINO reads an IR (``model.xml``, with ``model.bin`` beside it) and an ONNX file alike
(``Core.read_model`` picks the frontend by the file), so the file name alone decides the format.
Shaping follows Triton's openvino backend: ``RESHAPE_IO_LAYERS`` gives the inputs the config's
dims; a batching model whose batch dimension is fixed gets it fixed at ``max_batch_size``; a
config datatype other than the model's becomes a conversion at the model's edge.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openvino as ov  # type: ignore[import-untyped, unused-ignore]

from kernel import KernelError, ModelConfig, ModelContext, Status
from kernel.signature import check_config
from triton_backend_openvino._settings import OpenVinoSettings
from triton_backend_openvino._signature import RULES, model_signature
from triton_backend_openvino._tensors import CONFIG_TO_OV_TYPE

DEFAULT_MODEL_FILENAME = "model.xml"
ONNX_MODEL_FILENAME = "model.onnx"
DEVICE = "CPU"


@functools.cache
def openvino_core() -> ov.Core:
    """The process's one ``ov.Core``, made on first use and kept until the process ends.

    Nothing is set on it: each compile gets its model's properties, so models share no
    setting through it. One core rather than one per model because destroying a core unloads
    its device plugin and joins the plugin's threads while holding the GIL; an OpenVINO thread
    still releasing a Python object (a shared input, the queue's callback) then waits for the
    GIL forever, and every model unload would risk that.
    """
    return ov.Core()


def model_path(context: ModelContext) -> Path:
    """The model file: ``default_model_filename``, else ``model.xml``, else ``model.onnx``.

    :raises KernelError: ``UNAVAILABLE`` when the file does not exist.
    """
    path = context.model_file(DEFAULT_MODEL_FILENAME)
    if not context.config.default_model_filename and not path.exists():
        onnx = context.path / ONNX_MODEL_FILENAME
        path = onnx if onnx.exists() else path
    if not path.exists():
        raise KernelError(Status.UNAVAILABLE, f"unable to find '{path}' for model '{context.name}'")
    return path


def openvino_message(exc: BaseException) -> str:
    """OpenVINO's own words, without its ``Exception from src/...`` trace lines."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not line.startswith("Exception from ")]
    return " ".join(kept) or str(exc)


def read_model(path: Path, model: str) -> ov.Model:
    """The ``ov.Model`` in ``path`` (IR or ONNX).

    :raises KernelError: ``INVALID_ARG`` when OpenVINO cannot read it.
    """
    try:
        return openvino_core().read_model(str(path))
    except Exception as exc:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}': OpenVINO cannot read '{path}':"
            f" {openvino_message(exc)}",
        ) from exc


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """A model shaped and typed for its config, ready for each instance to compile."""

    model: ov.Model
    fixed_batch: bool
    """The batch dimension is fixed at ``max_batch_size``: smaller batches need padding."""


def prepare(model: ov.Model, config: ModelConfig, settings: OpenVinoSettings) -> PreparedModel:
    """Shape and type ``model`` for ``config``.

    :raises KernelError: ``INVALID_ARG`` when the config contradicts the model, names a dim
        OpenVINO cannot take, or a datatype this backend does not carry.
    """
    batching = config.max_batch_size > 0
    if settings.reshape_io_layers:
        _reshape(model, config, _config_shapes(model, config, batching))
    check_config(config, model_signature(model), RULES)
    fixed_batch = batching and any(
        port.get_partial_shape().rank.is_static
        and len(port.get_partial_shape()) > 0
        and port.get_partial_shape()[0].is_static
        for port in model.inputs
    )
    if fixed_batch:
        # Triton fixes the batch dimension at max_batch_size (ov::set_batch). A dynamic batch
        # dimension stays dynamic: every batch then runs at its own size, without padding.
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            shape[0] = ov.Dimension(config.max_batch_size)
            shapes[port.get_any_name()] = shape
        _reshape(model, config, shapes)
    return PreparedModel(_convert_types(model, config), fixed_batch)


def _config_shapes(model: ov.Model, config: ModelConfig, batching: bool) -> dict[str, Any]:
    """``RESHAPE_IO_LAYERS``: each input's shape from the config (its batch dim kept)."""
    shapes: dict[str, Any] = {}
    for tensor in config.input:
        port = next((p for p in model.inputs if tensor.name in p.get_names()), None)
        if port is None:
            continue  # check_config names it
        dims = list(tensor.reshape.shape if tensor.reshape is not None else tensor.dims)
        if any(d == 0 or d < -1 for d in dims):
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{config.name}': input '{tensor.name}' has dims {dims};"
                " RESHAPE_IO_LAYERS takes only -1 or positive dims",
            )
        head: list[ov.Dimension] = []
        if batching:
            current = port.get_partial_shape()
            static_rank = current.rank.is_static and len(current) > 0
            head = [current[0] if static_rank else ov.Dimension()]
        shapes[tensor.name] = ov.PartialShape(
            head + [ov.Dimension(d) if d > 0 else ov.Dimension() for d in dims]
        )
    return shapes


def _reshape(model: ov.Model, config: ModelConfig, shapes: dict[str, Any]) -> None:
    if not shapes:
        return
    try:
        model.reshape(shapes)
    except Exception as exc:
        wanted = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}': OpenVINO cannot reshape the model's inputs"
            f" to {wanted}: {openvino_message(exc)}",
        ) from exc


def _convert_types(model: ov.Model, config: ModelConfig) -> ov.Model:
    """Convert, at the model's edge, each tensor whose config datatype differs (Triton's way)."""
    processor = ov.preprocess.PrePostProcessor(model)
    converted = False
    for kind, tensors, ports in (
        ("input", config.input, model.inputs),
        ("output", config.output, model.outputs),
    ):
        for tensor in tensors:
            wanted = CONFIG_TO_OV_TYPE.get(tensor.data_type.name)
            if wanted is None:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{config.name}': {kind} '{tensor.name}' has the"
                    f" datatype {tensor.data_type.name}, which the openvino backend does not"
                    f" support (supported: {', '.join(CONFIG_TO_OV_TYPE)})",
                )
            port = next(p for p in ports if tensor.name in p.get_names())
            if port.get_element_type() != wanted:
                side = processor.input if kind == "input" else processor.output
                side(tensor.name).tensor().set_element_type(wanted)
                converted = True
    return processor.build() if converted else model


def compile_model(
    prepared: PreparedModel, settings: OpenVinoSettings, config: ModelConfig
) -> ov.CompiledModel:
    """One compiled model on the CPU, with the config's properties.

    :raises KernelError: ``INVALID_ARG`` when OpenVINO refuses the model or a property.
    """
    properties: dict[str, Any] = dict(settings.properties)
    # Triton lets OpenVINO batch infer requests for a batching model unless told not to.
    properties["ALLOW_AUTO_BATCHING"] = (
        config.max_batch_size > 0 and not settings.skip_dynamic_batch_size
    )
    try:
        return openvino_core().compile_model(prepared.model, DEVICE, properties)
    except Exception as exc:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}': OpenVINO cannot compile it for {DEVICE}"
            f" with {properties}: {openvino_message(exc)}",
        ) from exc
