"""The model's forward against its config: the load-time checks, and auto-complete for
exported programs.

TorchScript records argument names but neither datatypes nor shapes, so a TorchScript model is
checked as Triton checks it: the config must give one input per forward argument (or any number
for a forward taking one dict), and output datatypes are checked when outputs come back.
An exported program records every tensor's datatype and shape, dynamic dims included, so its
config is checked tensor by tensor, and a config without inputs or outputs is completed from
it, both by the kernel's rules (:mod:`kernel.signature`, Triton's onnxruntime backend's): inputs
named after the forward arguments (or the input dict's keys), outputs ``OUTPUT__<index>`` (or
the output dict's keys). What is torch's is here: which config tensor is which program tensor
(by position, Triton's naming rules, or by dict key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kernel import KernelError, ModelConfig, Status
from kernel.config import ModelInput, ModelOutput
from kernel.signature import (
    ModelSignature,
    TensorKind,
    TensorSignature,
    check_tensor,
    find_tensor,
)
from triton_backend_torch._program import TorchProgram


def program_signature(program: TorchProgram) -> ModelSignature:
    """The signature an exported program records (TorchScript records none)."""
    assert program.inputs is not None and program.outputs is not None, "exported programs only"
    return ModelSignature(inputs=program.inputs, outputs=program.outputs)


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
    signature = program_signature(program)
    sides: tuple[tuple[TensorKind, Sequence[ModelInput] | Sequence[ModelOutput], bool], ...] = (
        ("input", config.input, program.dict_input),
        ("output", config.output, bool(program.dict_output)),
    )
    for kind, tensors, by_name in sides:
        positions = inputs if kind == "input" else outputs
        for tensor in tensors:
            if by_name:
                spec: TensorSignature | None = find_tensor(config, signature, kind, tensor.name)
            else:
                spec = _at(signature.tensors(kind), positions.get(tensor.name))
            if spec is None:
                continue  # a position past the end: reported when outputs come back
            check_tensor(config, kind, tensor, spec)


def _at(specs: Sequence[TensorSignature], position: int | None) -> TensorSignature | None:
    if position is None or position >= len(specs):
        return None
    return specs[position]
