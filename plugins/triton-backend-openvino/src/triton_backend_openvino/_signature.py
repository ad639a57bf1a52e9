"""An OpenVINO model's signature in the kernel's terms, and the rules Triton's openvino backend
applies to it.

Auto-complete and the load-time check are the kernel's (:mod:`kernel.signature`). What is
OpenVINO's is here. A model can batch when the layout of every input and output names a batch
dimension (``N``, e.g. ``N...`` or ``NCHW``); then a missing ``max_batch_size`` becomes the
backend's default (at least 1) and an empty ``dynamic_batching`` is added. Models without
layouts (an ONNX file, most converted IRs) keep ``max_batch_size: 0`` and their full shapes,
or the user's ``max_batch_size`` with a warning. A scalar gets an empty ``reshape``, so it is fed
as one. The check refuses a config whose tensors the model does not have or whose shapes
contradict the model's (a fixed batch dim is fine: it is set to ``max_batch_size``; a config
``-1`` for a fixed dim is not). Datatypes may differ: OpenVINO converts at the model's edge, as
in Triton.
"""

from __future__ import annotations

import logging
from typing import Any

from kernel import ModelConfig
from kernel.signature import ModelSignature, SignatureRules, auto_complete
from triton_backend_openvino._tensors import has_batch_layout, tensor_signature

RULES = SignatureRules(
    warn_unbatchable=True,
    reshape_scalars=True,
    fixed_batch_dim=True,
    exact_fixed_dims=True,
    check_datatypes=False,
)
"""Where Triton's openvino backend departs from the common rules."""


def model_signature(model: Any) -> ModelSignature:
    """The signature of an ``ov.Model`` (or ``ov.CompiledModel``)."""
    return ModelSignature(
        inputs=[tensor_signature(port) for port in model.inputs],
        outputs=[tensor_signature(port) for port in model.outputs],
    )


def complete_config(
    config: ModelConfig, model: Any, default_max_batch_size: int, logger: logging.Logger
) -> ModelConfig:
    """Complete ``config`` from an ``ov.Model``, as Triton's openvino backend does; returns it.

    Runs only when the config lacks inputs or outputs: a complete config is the user's word
    (Triton would also raise ``max_batch_size: 0`` to the default there, which turns the
    user's full shapes into batched ones).

    :raises KernelError: ``INVALID_ARG`` when a tensor to fill in has a type this backend
        cannot carry or a dynamic rank.
    """
    ports = [*model.inputs, *model.outputs]
    return auto_complete(
        config,
        model_signature(model),
        default_max_batch_size=max(default_max_batch_size, 1),
        can_batch=bool(ports) and all(has_batch_layout(port) for port in ports),
        rules=RULES,
        logger=logger,
    )
