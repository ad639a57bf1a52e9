"""``scale``: a complete triton-kernel backend in one small module.

Every output ``OUTPUT<i>`` is input ``INPUT<i>`` times the model parameter ``factor``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kernel import (
    Backend,
    BackendAttributes,
    InferenceRequest,
    InstanceContext,
    KernelError,
    Model,
    ModelContext,
    ModelInstance,
    Status,
)

__all__ = ["ScaleBackend"]


class ScaleBackend(Backend):
    """One object per server process; makes a :class:`ScaleModel` per model version."""

    # Instances hold no shared state, so they may initialize concurrently.
    attributes = BackendAttributes(parallel_instance_loading=True)

    def create_model(self, context: ModelContext) -> Model:
        return ScaleModel(context)


class ScaleModel(Model):
    """Reads and checks the model's parameters once, for all its instances."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        self.factor = 1.0

    def initialize(self) -> None:  # plain def: the kernel runs it in a worker thread
        text = self.context.parameter("factor", "1")
        try:
            self.factor = float(text or "1")
        except ValueError:
            raise KernelError(
                Status.INVALID_ARG,
                f"model '{self.context.name}': parameter 'factor' must be a number, got '{text}'",
            ) from None

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return ScaleInstance(context, self.factor)


class ScaleInstance(ModelInstance):
    """Executes batches; the kernel gives each instance one batch at a time."""

    def __init__(self, context: InstanceContext, factor: float) -> None:
        super().__init__(context)
        self.factor = factor

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        for request in requests:
            outputs = {
                name.replace("INPUT", "OUTPUT"): (array * self.factor).astype(array.dtype)
                for name, array in request.inputs.items()
            }
            request.respond(outputs)  # exactly once per request
