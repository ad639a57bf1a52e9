"""A model's tensor signature against its config: Triton's auto-complete and load-time check.

A framework backend can read, from the model file, which tensors the model takes and gives: their
names, element types and shapes (its *signature*). Triton's backends do two things with it, and
this module does them for a plugin, with Triton's rules and wording:

- :func:`auto_complete` fills in what a config lacks: the inputs and outputs, and, when the model
  can batch, ``max_batch_size`` plus an empty ``dynamic_batching``. What the user wrote is never
  replaced.
- :func:`check_config` refuses, at load, a config whose tensors the model does not have, or
  whose datatypes or shapes contradict the model's, naming the tensor and what each side says.

A plugin keeps only what is specific to its format: reading a :class:`ModelSignature` out of the
file (its element types as config datatypes, each dynamic dim as ``-1``), and the
:class:`SignatureRules` where its Triton backend departs from the common rules::

    RULES = SignatureRules(check_datatypes=False)  # a backend that converts datatypes

    class MyModel(Model):
        def auto_complete_config(self, config):
            if is_complete(config):
                return config  # Triton's rule: a config with inputs and outputs stays as is
            signature = read_signature(self.context)  # the plugin's own reader
            return auto_complete(config, signature, rules=RULES, logger=self.context.logger)

        def initialize(self):
            check_config(self.context.config, read_signature(self.context), RULES)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from kernel._errors import KernelError, Status
from kernel.config import (
    DataType,
    ModelConfig,
    ModelDynamicBatching,
    ModelInput,
    ModelOutput,
    ModelTensorReshape,
)

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "ModelSignature",
    "SignatureRules",
    "TensorKind",
    "TensorSignature",
    "auto_complete",
    "check_config",
    "check_dims",
    "check_tensor",
    "find_tensor",
    "format_shape",
    "implicit_inputs",
    "is_complete",
    "output_reshape",
]

DEFAULT_MAX_BATCH_SIZE = 4
"""Triton's ``--backend-config=<backend>,default-max-batch-size`` default: the
``max_batch_size`` auto-complete gives a model that can batch."""

TensorKind = Literal["input", "output"]
"""Which side of the model a tensor is on, as messages name it."""

_log = logging.getLogger("kernel.signature")


@dataclass(frozen=True, slots=True)
class TensorSignature:
    """One input or output as the model file declares it, in the config's terms."""

    name: str
    config_type: str | None
    """The config datatype (``"TYPE_FP32"``); ``None`` when the backend has none for the type."""
    dims: tuple[int, ...] | None
    """Dims with every dynamic dim as ``-1`` (``()`` for a scalar); ``None`` when the file does
    not say the rank."""
    framework_type: str = ""
    """The format's own name for the element type (``tensor(float)``, ``torch.float32``,
    ``f32``), which messages show when no config datatype matches it."""
    aliases: frozenset[str] = frozenset()
    """Other names the tensor answers to (an OpenVINO port may carry several)."""

    @property
    def names(self) -> frozenset[str]:
        """Every name a config may give the tensor: ``name`` and the ``aliases``."""
        return self.aliases | {self.name}

    @property
    def batch_first(self) -> bool:
        """The first dim is dynamic: the tensor may carry the batch dimension there."""
        return self.dims is not None and len(self.dims) > 0 and self.dims[0] == -1


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """The tensors a model takes and gives, in the model's order."""

    inputs: Sequence[TensorSignature]
    outputs: Sequence[TensorSignature]
    optional_inputs: Sequence[TensorSignature] = ()
    """Inputs a config may declare but need not (ONNX's overridable initializers)."""

    def tensors(self, kind: TensorKind) -> Sequence[TensorSignature]:
        """The outputs, or the inputs (the required ones, then the optional ones)."""
        return self.outputs if kind == "output" else (*self.inputs, *self.optional_inputs)

    def find(self, kind: TensorKind, name: str) -> TensorSignature | None:
        """The input or output answering to ``name``, if the model has one."""
        return next((t for t in self.tensors(kind) if name in t.names), None)

    def batchable(self) -> bool:
        """Whether every input and output has a dynamic first dim: Triton's test, from the
        shapes alone, that a model can batch."""
        return all(t.batch_first for t in (*self.inputs, *self.outputs))


@dataclass(frozen=True, slots=True)
class SignatureRules:
    """Where a backend departs from the rules Triton's backends share (the defaults).

    Each plugin states its own once, next to the code that reads its format's signature.
    """

    warn_unbatchable: bool = False
    """Auto-complete keeps a ``max_batch_size`` the config sets for a model it finds cannot
    batch, with a warning, instead of failing the load (Triton's openvino backend, whose
    evidence, the layouts, is missing from many models that batch)."""
    reshape_scalars: bool = False
    """Auto-complete gives a scalar an empty ``reshape`` even when the model does not batch
    (the backend then feeds it as a scalar); by default only a batching model's tensor that is
    the batch dimension alone gets one, as in Triton's onnxruntime backend."""
    batched_scalars: bool = False
    """A scalar model tensor passes the check with config dims of 1s even when the model
    batches (Triton's onnxruntime backend: one row is fed as the scalar); by default a batching
    model's tensors all need a batch dimension."""
    fixed_batch_dim: bool = False
    """A batching model's first dim may be fixed, since the backend sets it to
    ``max_batch_size`` (Triton's openvino backend); by default it must be dynamic."""
    exact_fixed_dims: bool = False
    """A fixed model dim takes only its own size; by default a config ``-1`` matches it too,
    as in Triton's shape comparison (the model then refuses other sizes at inference)."""
    check_datatypes: bool = True
    """The config's datatypes must be the model's; off for a backend that converts them at
    the model's edge (Triton's openvino backend)."""


_COMMON_RULES = SignatureRules()


def format_shape(dims: Sequence[int] | None) -> str:
    """``[-1,16]``, as Triton prints shapes (``[?]`` for an unknown rank)."""
    return "[?]" if dims is None else "[" + ",".join(str(d) for d in dims) + "]"


def is_complete(config: ModelConfig) -> bool:
    """Whether the config lists inputs (or batch inputs) and outputs: Triton then skips
    auto-complete, so a backend need not open the model file."""
    return bool((config.input or config.batch_input) and config.output)


def implicit_inputs(config: ModelConfig) -> list[str]:
    """Inputs the kernel supplies itself, which a model takes without the config declaring
    them: the sequence batcher's control inputs, then its state inputs, in the config's order."""
    sequence = config.sequence_batching
    if sequence is None:
        return []
    return [control.name for control in sequence.control_input] + [
        state.input_name for state in sequence.state
    ]


def auto_complete(
    config: ModelConfig,
    signature: ModelSignature,
    *,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    can_batch: bool | None = None,
    rules: SignatureRules = _COMMON_RULES,
    logger: logging.Logger | None = None,
) -> ModelConfig:
    """Complete ``config`` from the model's signature, as Triton's backends do; returns it.

    Nothing happens to a complete config (:func:`is_complete`). Otherwise, when the model can
    batch (``can_batch``; by default :meth:`ModelSignature.batchable`), a ``max_batch_size`` of
    0 becomes ``default_max_batch_size`` (with a warning on ``logger``, as Triton gives) and a
    config without a scheduler gets an empty ``dynamic_batching``. Then missing inputs
    (required ones only) and outputs are filled in, with dims after the batch dim when
    ``max_batch_size > 0``; a tensor left with no dims gets ``[1]``, and a batch-only one
    also an empty ``reshape``.

    :raises KernelError: ``INVALID_ARG`` when the model cannot batch but the config sets a
        ``max_batch_size`` (unless ``rules.warn_unbatchable``), or a tensor to fill in has no
        config datatype or an unknown rank.
    """
    if is_complete(config):
        return config
    log = logger or _log
    if can_batch is None:
        can_batch = signature.batchable()
    if can_batch:
        if config.max_batch_size == 0 and default_max_batch_size > 0:
            config.max_batch_size = default_max_batch_size
            log.warning(
                "autofilled max_batch_size to %d for model '%s' since batching is supported but"
                " no max_batch_size is specified in model configuration",
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
        if not rules.warn_unbatchable:
            raise KernelError(
                Status.INVALID_ARG,
                f"autofill failed for model '{config.name}': model does not support batching"
                " while non-zero max_batch_size is specified",
            )
        log.warning(
            "model '%s' does not name a batch dimension while non-zero max_batch_size is"
            " specified; its tensors are completed as batched",
            config.name,
        )
    batching = config.max_batch_size > 0
    if not config.input and not config.batch_input:
        config.input = [
            ModelInput(**_completed(config.name, t, batching, rules)) for t in signature.inputs
        ]
    if not config.output:
        config.output = [
            ModelOutput(**_completed(config.name, t, batching, rules)) for t in signature.outputs
        ]
    return config


class _Completed(TypedDict):
    name: str
    data_type: DataType
    dims: list[int]
    reshape: ModelTensorReshape | None


def _completed(
    model: str, tensor: TensorSignature, batching: bool, rules: SignatureRules
) -> _Completed:
    """A filled-in tensor, as Triton writes it: the dims after the batch dim, or ``[1]`` (with
    an empty ``reshape`` for a batch-only tensor) when none are left."""
    if tensor.config_type is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{model}': tensor '{tensor.name}' has the type"
            f" {tensor.framework_type or '?'}, which this backend maps to no Triton datatype",
        )
    if tensor.dims is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"autofill failed for model '{model}': tensor '{tensor.name}' has a dynamic rank;"
            " give its dims in config.pbtxt",
        )
    dims = list(tensor.dims[1:] if batching else tensor.dims)
    reshape = None
    if not dims:
        dims = [1]
        if batching or rules.reshape_scalars:
            reshape = ModelTensorReshape(shape=[])
    return _Completed(
        name=tensor.name,
        data_type=DataType[tensor.config_type],
        dims=dims,
        reshape=reshape,
    )


def check_config(
    config: ModelConfig, signature: ModelSignature, rules: SignatureRules = _COMMON_RULES
) -> None:
    """Refuse a config that contradicts the model, as Triton's backends do at load.

    Every required model input must be declared (or be one of :func:`implicit_inputs`), and
    every config input and output must be one of the model's (:func:`find_tensor`) with its
    datatype and shape (:func:`check_tensor`).

    :raises KernelError: ``INVALID_ARG`` naming the tensor and what each side says.
    """
    declared = {t.name for t in config.input} | set(implicit_inputs(config))
    undeclared = [t.name for t in signature.inputs if not t.names & declared]
    if undeclared:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}', configuration expects {len(declared)}"
            f" inputs, model provides {len(signature.inputs)}: model input(s) {undeclared} are"
            " missing from the configuration",
        )
    sides: tuple[tuple[TensorKind, Sequence[ModelInput] | Sequence[ModelOutput]], ...] = (
        ("input", config.input),
        ("output", config.output),
    )
    for kind, tensors in sides:
        for tensor in tensors:
            spec = find_tensor(config, signature, kind, tensor.name)
            check_tensor(config, kind, tensor, spec, rules)


def find_tensor(
    config: ModelConfig, signature: ModelSignature, kind: TensorKind, name: str
) -> TensorSignature:
    """The model's input or output the config calls ``name``.

    :raises KernelError: ``INVALID_ARG`` naming it and the model's tensors of that kind.
    """
    found = signature.find(kind, name)
    if found is None:
        known = sorted(t.name for t in signature.tensors(kind))
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{config.name}', configuration expects {kind} '{name}', but"
            f" the model has no such {kind} (model {kind}s: {known})",
        )
    return found


def check_tensor(
    config: ModelConfig,
    kind: TensorKind,
    tensor: ModelInput | ModelOutput,
    spec: TensorSignature,
    rules: SignatureRules = _COMMON_RULES,
) -> None:
    """Refuse a config tensor whose datatype (unless ``rules.check_datatypes`` is off) or dims
    (its ``reshape`` when it has one, see :func:`check_dims`) contradict the model's ``spec``.

    :raises KernelError: ``INVALID_ARG`` naming the tensor and what each side says.
    """
    if rules.check_datatypes:
        expected = tensor.data_type.name
        if spec.config_type != expected:
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{config.name}', configuration expects datatype"
                f" {expected} for {kind} '{tensor.name}', model provides"
                f" {spec.config_type or spec.framework_type}",
            )
    dims = list(tensor.reshape.shape if tensor.reshape is not None else tensor.dims)
    check_dims(
        config.name,
        kind,
        tensor.name,
        spec.dims,
        dims,
        batching=config.max_batch_size > 0,
        rules=rules,
    )


def check_dims(
    model: str,
    kind: TensorKind,
    name: str,
    model_dims: Sequence[int] | None,
    config_dims: Sequence[int],
    *,
    batching: bool,
    rules: SignatureRules = _COMMON_RULES,
) -> None:
    """Refuse config dims the model cannot take, as Triton compares them.

    ``config_dims`` exclude the batch dim, which ``batching`` (``max_batch_size > 0``) puts
    first: the model's first dim must then be dynamic (or, with ``rules.fixed_batch_dim``, any
    size). A dynamic model dim takes any config dim; a fixed one takes its own size and a
    config ``-1`` (unless ``rules.exact_fixed_dims``). A scalar model tensor takes config dims
    of 1s only (the kernel carries it as ``[1]``). A model dims of ``None`` (unknown rank)
    takes anything.

    :raises KernelError: ``INVALID_ARG`` naming the tensor and both shapes.
    """
    if model_dims is None:
        return  # the model does not say its rank: nothing to contradict
    full = [-1, *config_dims] if batching else list(config_dims)
    if not model_dims and (not batching or rules.batched_scalars):
        if any(d != 1 for d in config_dims):
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{model}', scalar tensor '{name}' should only provide 1"
                " in the model configuration; the model expects shape [] but the model"
                f" configuration specifies {format_shape(config_dims)}",
            )
        return
    note = " (max_batch_size > 0 adds the leading batch dimension)" if batching else ""
    if batching and (not model_dims or (model_dims[0] != -1 and not rules.fixed_batch_dim)):
        needs = "at least 1 dimension"
        if not rules.fixed_batch_dim:
            needs += " and the first dimension must be -1"
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', {kind} '{name}': for the model to support batching"
            f" the shape should have {needs}; but the model expects shape"
            f" {format_shape(model_dims)} and the model configuration specifies"
            f" {format_shape(full)}{note}",
        )
    start = 1 if batching else 0  # the batch dim passed above
    fits = len(model_dims) == len(full) and all(
        m in (-1, c) or (c == -1 and not rules.exact_fixed_dims)
        for m, c in zip(model_dims[start:], full[start:], strict=True)
    )
    if not fits:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}', {kind} '{name}': the model expects shape"
            f" {format_shape(model_dims)} but the model configuration specifies shape"
            f" {format_shape(full)}{note}",
        )


def output_reshape(output: ModelOutput, spec: TensorSignature | None) -> tuple[int, ...] | None:
    """The dims (without the batch dim) to give a model output so it has the config's shape,
    or ``None`` to answer with the array as the model made it.

    They are the config's dims when the config gives the output a ``reshape``, or when the
    model's output is a scalar (which the config carries as ``[1]``); never dims with more than
    one ``-1``, which name no single shape.
    """
    dims = list(output.dims)
    scalar = spec is not None and spec.dims == ()
    if not (output.reshape is not None or scalar) or dims.count(-1) > 1:
        return None
    return tuple(dims)
