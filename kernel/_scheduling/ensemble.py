"""Ensembles (``platform: "ensemble"``): pipelines of other models, run inside the kernel.

An ensemble is served like any model -- a :class:`~kernel._models.ModelVersion` with one instance
-- whose backend is the kernel's own :class:`EnsembleBackend` rather than a plugin. Loading it
loads the step models it needs (in every model control mode) and checks the steps against them.
Its instance runs each request as a dataflow (see :mod:`kernel._scheduling._ensemble_plan`):
every step is an in-process request to its model through the server, started as soon as its
input tensors exist, so independent steps run concurrently; tensors pass between steps as the
same numpy arrays, never copied. A failing step fails the request with Triton's ``in ensemble
'<name>', ...`` message naming the step's model. When a step is decoupled the ensemble streams:
each of that step's responses feeds the steps after it, and the ensemble sends a response for
each complete set of outputs (its config is marked decoupled at load, as it is in effect).

A tensor may also be *absent*, as in Triton: an optional ensemble input the client left out, or
a step output a (non-streaming) step did not produce. A step whose inputs are all present or
absent runs, with the absent ones left out of its request (its model decides whether it may
do without them); the ensemble answers with the outputs that exist (Triton's partial outputs).

``ensemble_scheduling.max_inflight_requests`` (0: no limit) bounds, as in Triton, the requests
in flight at each step across all the ensemble's requests: a step run waits for a free place
before its request goes to the step's model, and gives it back once that request finished.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import numpy.typing as npt
from anyio.abc import TaskGroup

from kernel._backend import Backend, InstanceContext, Model, ModelContext, ModelInstance
from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest, InferenceResponse, ResponseSender
from kernel._proto.inference import ModelConfig, ModelTransactionPolicy
from kernel._scheduling._ensemble_plan import EnsemblePlan, Step, StepModel
from kernel._scheduling.direct import DirectScheduler

__all__ = ["EnsembleBackend", "EnsembleHost", "EnsembleScheduler"]

log = logging.getLogger("kernel.ensemble")

Array = npt.NDArray[Any]


class _Routed(Protocol):
    @property
    def config(self) -> ModelConfig: ...

    @property
    def decoupled(self) -> bool: ...


class EnsembleHost(Protocol):
    """What the ensemble backend needs of the model manager."""

    async def ensure_loaded(self, name: str) -> None:
        """Load model ``name`` unless it already serves."""
        ...

    def route(self, name: str, version: int = -1) -> _Routed:
        """The version of ``name`` that requests go to."""
        ...


class EnsembleScheduler(DirectScheduler):
    """First come first served, one request per batch; pipelines of one ensemble overlap."""

    overlapping = True


class EnsembleBackend(Backend):
    """The kernel's backend for ensembles; the model manager makes one and owns it."""

    def __init__(self, host: EnsembleHost) -> None:
        self._host = host
        self._loading: dict[str, set[str]] = {}
        """Ensemble -> the step models it is waiting to load (to refuse a cycle, which would
        otherwise wait forever on the load locks)."""

    def create_model(self, context: ModelContext) -> Model:
        return EnsembleModel(context, self)

    def _waits_on(self, name: str, target: str) -> bool:
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current == target:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(self._loading.get(current, ()))
        return False

    async def load_steps(self, plan: EnsemblePlan) -> dict[int, StepModel]:
        """Load what ``plan``'s steps run (unless loaded) and return them by step index.

        :raises KernelError: ``INVALID_ARG`` with Triton's message when a step model cannot
            load, or when ensembles need each other.
        """
        waiting = self._loading.setdefault(plan.name, set())
        try:
            for model in plan.models:
                if self._waits_on(model, plan.name):
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"circular dependency between ensembles: '{plan.name}' and '{model}'"
                        " need each other",
                    )
                waiting.add(model)
                try:
                    await self._host.ensure_loaded(model)
                except KernelError as exc:
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"ensemble '{plan.name}' depends on '{model}' which has no loaded"
                        f" version. Model '{model}' loading failed with error: {exc.message}",
                    ) from exc
                finally:
                    waiting.discard(model)
                log.info("ensemble '%s': step model '%s' is loaded", plan.name, model)
        finally:
            if not waiting:
                self._loading.pop(plan.name, None)
        found: dict[int, StepModel] = {}
        for step in plan.steps:
            try:
                routed = self._host.route(step.model_name, step.model_version)
            except KernelError as exc:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"ensemble '{plan.name}' depends on '{step.model_name}' which has no loaded"
                    f" version: {exc.message}",
                ) from exc
            found[step.index] = StepModel(routed.config, routed.decoupled)
        return found


class EnsembleModel(Model):
    """One loaded version of an ensemble: its checked plan."""

    def __init__(self, context: ModelContext, backend: EnsembleBackend) -> None:
        super().__init__(context)
        self._backend = backend
        self.plan = EnsemblePlan.from_config(context.config)
        self.inflight: list[anyio.Semaphore] | None = None
        """Per step, its places for requests in flight (``max_inflight_requests``)."""

    async def initialize(self) -> None:
        config = self.context.config
        self.plan = EnsemblePlan.from_config(config)
        self.plan.bind(await self._backend.load_steps(self.plan))
        scheduling = config.ensemble_scheduling
        limit = scheduling.max_inflight_requests if scheduling is not None else 0
        if limit:
            self.inflight = [anyio.Semaphore(limit) for _ in self.plan.steps]
        if self.plan.streams and not self.context.decoupled:
            # A decoupled step makes the ensemble stream; say so, so frontends treat it so.
            config.model_transaction_policy = ModelTransactionPolicy(decoupled=True)

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return EnsembleInstance(context, self)

    async def run(self, request: InferenceRequest) -> None:
        """Run one request through the pipeline and answer it (never raises)."""
        sender = request.response_sender() if self.plan.streams else None
        run = _Run(self.plan, self.context, request, sender, self.inflight)
        error: KernelError | None
        try:
            await run.run()
        except Exception as exc:  # a bug here must still answer the request
            log.exception("ensemble '%s' failed", self.plan.name)
            error = KernelError.wrap(exc)
        else:
            error = run.error
        if sender is not None:
            sender.send(InferenceResponse(error=error) if error else None, final=True)
        elif error is not None:
            request.respond(error=error)
        else:
            request.respond(run.final_outputs())


class EnsembleInstance(ModelInstance):
    """Runs each request of a batch as its own pipeline."""

    def __init__(self, context: InstanceContext, model: EnsembleModel) -> None:
        super().__init__(context)
        self._model = model

    async def execute(self, requests: Sequence[InferenceRequest]) -> None:
        async with anyio.create_task_group() as tg:
            for request in requests:
                tg.start_soon(self._model.run, request)


class _Run:
    """One request's trip through the steps."""

    def __init__(
        self,
        plan: EnsemblePlan,
        context: ModelContext,
        request: InferenceRequest,
        sender: ResponseSender | None,
        inflight: list[anyio.Semaphore] | None = None,
    ) -> None:
        self.plan = plan
        self.inflight = inflight
        self.server = context.server
        self.request = request
        self.sender = sender
        self.values: dict[str, list[Array]] = {k: [v] for k, v in request.inputs.items()}
        self.absent: set[str] = {name for name in plan.inputs if name not in request.inputs}
        """Tensors that will never have a value (see the module doc)."""
        self.started = [0] * len(plan.steps)
        self.sent = 0
        self.error: KernelError | None = None
        self._scope: anyio.CancelScope | None = None

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            self._advance(tg)

    def _runs(self, tensors: Sequence[str]) -> int:
        """How many runs the values of ``tensors`` allow so far (absent ones allow any)."""
        if any(not self.values.get(t) and t not in self.absent for t in tensors):
            return 0
        streaming = [
            len(self.values[t]) for t in tensors if t in self.plan.streaming and t in self.values
        ]
        return min(streaming) if streaming else 1

    def _value(self, tensor: str, run: int) -> Array:
        return self.values[tensor][run if tensor in self.plan.streaming else 0]

    def _advance(self, tg: TaskGroup) -> None:
        """Start every step run whose inputs now exist; stream out complete output sets."""
        for step in self.plan.steps:
            for run in range(self.started[step.index], self._runs(list(step.inputs.values()))):
                self.started[step.index] = run + 1
                tg.start_soon(self._step, tg, step, run)
        if self.sender is not None:
            for run in range(self.sent, self._runs(self.plan.outputs)):
                self.sent = run + 1
                outputs = {
                    name: self._value(name, run)
                    for name in self.plan.outputs
                    if name not in self.absent
                }
                self.sender.send(InferenceResponse(outputs=outputs))

    async def _step(self, tg: TaskGroup, step: Step, run: int) -> None:
        if self.inflight is None:
            await self._send(tg, step, run)
        else:
            async with self.inflight[step.index]:  # max_inflight_requests
                await self._send(tg, step, run)

    async def _send(self, tg: TaskGroup, step: Step, run: int) -> None:
        request = self.request
        step_request = InferenceRequest(
            step.model_name,
            {
                name: self._value(tensor, run)
                for name, tensor in step.inputs.items()
                if tensor not in self.absent
            },
            model_version=step.model_version,
            id=request.id,
            requested_output_names=list(step.outputs),
            parameters=request.parameters,
            correlation_id=request.correlation_id,
            flags=request.flags,
            priority=request.priority,
            timeout_us=request.timeout_us,
        )
        if request.trace is not None:  # a step is traced as a child of the ensemble's trace
            step_request.trace = request.trace.child()
        streaming = step.index in self.plan.streaming_steps
        try:
            async for response in self.server.infer(step_request):
                if response.error is not None:
                    raise response.error
                for name, tensor in step.outputs.items():
                    value = response.outputs.get(name)
                    if value is not None:
                        self.values.setdefault(tensor, []).append(value)
                    elif not streaming:
                        self.absent.add(tensor)  # a partial output: what needs it goes without
                self._advance(tg)
        except KernelError as exc:
            self._fail(step, exc)

    def _fail(self, step: Step, error: KernelError) -> None:
        if self.error is None:
            text = error.message
            if f"'{step.model_name}'" not in text:
                text = f"model '{step.model_name}': {text}"
            self.error = KernelError(error.status, f"in ensemble '{self.plan.name}', {text}")
        if self._scope is not None:
            self._scope.cancel()

    def final_outputs(self) -> dict[str, Array]:
        """The outputs of a non-streaming request, once every step finished."""
        return {name: self.values[name][0] for name in self.plan.outputs if name in self.values}
