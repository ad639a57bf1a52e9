"""Finding a model's file and loading it as a callable with what the backend needs to know.

Two formats, told apart by the file name: ``.pt2`` is a PyTorch 2 exported program
(``torch.export.save``, loaded with ``torch.export.load``), anything else is TorchScript
(``torch.jit.save``, loaded with ``torch.jit.load``). Without ``default_model_filename`` the
version folder's ``model.pt`` is used, else its ``model.pt2``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kernel import KernelError, ModelContext, Status
from kernel.signature import TensorSignature
from triton_backend_torch._mutation import exported_written_args, torchscript_written_args
from triton_backend_torch._tensors import config_type_of

TORCHSCRIPT_FILENAME = "model.pt"
EXPORTED_FILENAME = "model.pt2"

_EXPORT_LOAD_LOCK = threading.Lock()
"""``torch.export.load`` sets a process-wide deserializer for the duration of a load and refuses
a second one at once ("_CURRENT_DESERIALIZER is already set"): models and instances load in
parallel threads, so their exported-program loads take turns. Process-wide like what it guards."""


def model_path(context: ModelContext) -> Path:
    """The file to load: ``default_model_filename``, else ``model.pt``, else ``model.pt2``.

    :raises KernelError: ``UNAVAILABLE`` when the file does not exist.
    """
    if context.config.default_model_filename:
        path = context.model_file(TORCHSCRIPT_FILENAME)
    else:
        path = context.path / TORCHSCRIPT_FILENAME
        if not path.is_file() and (context.path / EXPORTED_FILENAME).is_file():
            path = context.path / EXPORTED_FILENAME
    if not path.is_file():
        tried = "" if context.config.default_model_filename else f" (nor '{EXPORTED_FILENAME}')"
        raise KernelError(
            Status.UNAVAILABLE, f"unable to find '{path}'{tried} for model '{context.name}'"
        )
    return path


def is_exported(path: Path) -> bool:
    """Whether the file is a PyTorch 2 exported program rather than TorchScript."""
    return path.suffix == ".pt2"


@dataclass(frozen=True, slots=True)
class TorchProgram:
    """A loaded model: what to call, and how its forward takes and gives tensors."""

    call: Callable[..., Any]
    torchscript: bool
    forward_args: tuple[str, ...]
    """The forward's argument names, in order (``self`` excluded)."""
    dict_input: bool
    """The forward takes one ``Dict[str, Tensor]`` holding every input."""
    dict_output: bool | None
    """The forward returns a dict (``None``: TorchScript, known only when it returns)."""
    written_args: frozenset[int]
    """Positions of arguments the model may write into (they get private copies)."""
    inputs: list[TensorSignature] | None = field(default=None)
    """Exported programs only: the forward's tensors (TorchScript does not record them)."""
    outputs: list[TensorSignature] | None = field(default=None)
    """Exported programs only: ``OUTPUT__<index>``, or the keys of a dict result."""


def load(path: Path, model: str, device: torch.device | None) -> TorchProgram:
    """Load ``path`` onto ``device`` (``None``: where the file put it, for KIND_MODEL).

    :raises KernelError: ``INVALID_ARG`` when torch cannot load the file or its forward takes
        something other than tensors, lists of strings or one dict of tensors.
    """
    try:
        if is_exported(path):
            return _load_exported(path, device)
        return _load_torchscript(path, device)
    except KernelError:
        raise
    except Exception as exc:
        kind = "an exported program" if is_exported(path) else "a TorchScript module"
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}': torch cannot load '{path}' as {kind}: {exc}",
        ) from exc


def _load_torchscript(path: Path, device: torch.device | None) -> TorchProgram:
    module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    arguments = list(module.forward.schema.arguments)
    if arguments and arguments[0].type.kind() == "ClassType":
        arguments = arguments[1:]  # self
    kinds = [arg.type.kind() for arg in arguments]
    dict_input = kinds == ["DictType"]
    refused = [
        f"{arg.name}: {arg.type}"
        for arg, kind in zip(arguments, kinds, strict=True)
        if kind not in ("TensorType", "ListType") and not dict_input
    ]
    if refused:
        raise KernelError(
            Status.INVALID_ARG,
            f"forward takes {refused}; only tensors, List[str] or one Dict[str, Tensor] can be"
            " fed from Triton inputs",
        )
    return TorchProgram(
        call=module,
        torchscript=True,
        forward_args=tuple(arg.name for arg in arguments),
        dict_input=dict_input,
        dict_output=None,
        written_args=torchscript_written_args(module),
    )


def _load_exported(path: Path, device: torch.device | None) -> TorchProgram:
    with _EXPORT_LOAD_LOCK:
        program = torch.export.load(str(path))
    signature = program.module_call_graph[0].signature
    user_inputs = list(program.graph_signature.user_inputs)
    forward_args = list(signature.forward_arg_names) if signature is not None else user_inputs
    args_spec = program.call_spec.in_spec.child(0)
    dict_input = args_spec.num_children == 1 and args_spec.child(0).type is dict
    written = exported_written_args(program)
    module = program.module()
    if device is not None and device.type != "cpu":
        module = module.to(device)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    # The graph's user inputs are the forward's arguments flattened: the dict's values in its
    # key order for a dict input, else the arguments in order.
    input_names = [str(k) for k in args_spec.child(0).context] if dict_input else forward_args
    inputs = [
        _spec(name, placeholders[placeholder])
        for name, placeholder in zip(input_names, user_inputs, strict=False)
    ]
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    out_spec = program.call_spec.out_spec
    flat = list(output_node.args[0])
    if out_spec.type is dict:
        names = [str(key) for key in out_spec.context]
    else:
        names = [f"OUTPUT__{i}" for i in range(len(flat))]
    return TorchProgram(
        call=module,
        torchscript=False,
        forward_args=tuple(forward_args),
        dict_input=dict_input,
        dict_output=out_spec.type is dict,
        written_args=written,
        inputs=inputs,
        outputs=[_spec(name, node) for name, node in zip(names, flat, strict=True)],
    )


def _spec(name: str, node: Any) -> TensorSignature:
    """One tensor as the graph records it, every dynamic dim as ``-1``."""
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    if not isinstance(value, torch.Tensor):
        return TensorSignature(name, None, (), framework_type=type(value).__name__)
    dims = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSignature(name, config_type_of(value), dims, framework_type=str(value.dtype))
