"""An ONNX session's signature in the kernel's terms, and the rules Triton's onnxruntime backend
applies to it.

Auto-complete and the load-time check are the kernel's (:mod:`kernel.signature`). What is ONNX's
is read here: the session's inputs, its overridable initializers (inputs a config may declare
but need not) and its outputs, in the model's order; and one rule of Triton's onnxruntime
backend, which feeds a one-row batch to a scalar input, so a batching model may have scalars.
"""

from __future__ import annotations

from typing import Any

from kernel.signature import ModelSignature, SignatureRules
from triton_backend_onnx._tensors import tensor_signature

RULES = SignatureRules(batched_scalars=True)
"""Where Triton's onnxruntime backend departs from the common rules."""


def session_signature(session: Any) -> ModelSignature:
    """The signature of an ``onnxruntime.InferenceSession``."""
    return ModelSignature(
        inputs=[tensor_signature(node) for node in session.get_inputs()],
        outputs=[tensor_signature(node) for node in session.get_outputs()],
        optional_inputs=[tensor_signature(node) for node in session.get_overridable_initializers()],
    )
