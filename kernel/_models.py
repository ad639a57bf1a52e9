"""One loaded model version: its lifecycle, its scheduler and its instance workers.

:meth:`ModelVersion.run` is the version's whole life as one task: create and initialize the model
and its instances, start one worker per instance in the version's own task group, report ready,
serve until told to stop, drain what was accepted, then finalize instances (last first) and the
model. Everything a load started is finalized on every path out, failures included.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from kernel._admissions import Admissions
from kernel._backend import (
    INSTANCE_READY_TIMEOUT_SECONDS,
    Backend,
    InstanceContext,
    Model,
    ModelContext,
    ModelInstance,
)
from kernel._devices import visible_gpus
from kernel._errors import KernelError, Status
from kernel._hooks import call_hook, is_async
from kernel._instance_worker import InstanceWorker, LoadedInstance
from kernel._latency import LatencyConfig, LatencyRecorder
from kernel._proto.inference import (
    ModelConfig,
    ModelInstanceGroup,
    ModelInstanceGroupKind,
    ModelRateLimiter,
)
from kernel._repository import normalize_config
from kernel._scheduling import Scheduler, SequenceBatcher, scheduler_for
from kernel._scheduling._rate_limiter import CPU_DEVICE, RateLimiter
from kernel._statistics import MemoryUsage, ModelStatistics
from kernel._validation import RequestValidator
from kernel._warmup import WarmupSample, run_warmup, warmup_samples

__all__ = ["ModelState", "ModelVersion", "SchedulerFactory"]

log = logging.getLogger("kernel.models")

SchedulerFactory = Callable[[ModelConfig], Scheduler]


class ModelState(enum.Enum):
    """Triton's model states, as the repository index reports them."""

    UNKNOWN = "UNKNOWN"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


class ModelVersion:
    """A model version from load to unload. Owned by the :class:`~kernel._manager.ModelManager`."""

    def __init__(
        self,
        backend: Backend,
        context: ModelContext,
        *,
        drain_timeout: float,
        scheduler_factory: SchedulerFactory | None = None,
    ) -> None:
        self.backend = backend
        self.context = context
        self.name = context.name
        self.version = context.version
        self.state = ModelState.LOADING
        self.reason = ""
        self.stats = ModelStatistics(context.name, context.version)
        latency: LatencyConfig | None = getattr(context.server, "latency_config", None)
        if latency is not None and (latency.summaries or latency.histograms):
            self.stats.latency = LatencyRecorder(latency, decoupled=context.decoupled)
        self.admissions = Admissions()
        """The requests admitted and not settled, the batches executing (what a drain awaits)."""
        self.traced = 0
        """Traced requests in flight (see kernel._tracing): 0 skips tracing per batch."""
        self.drain_timeout = drain_timeout
        self._scheduler_factory = scheduler_factory or (
            lambda config: scheduler_for(config, context.model_dir)
        )
        self.scheduler: Scheduler = self._scheduler_factory(context.config)
        self.validator = RequestValidator(context.config)
        self._stop = anyio.Event()
        self.finished = anyio.Event()
        self.instances: list[LoadedInstance] = []
        self.workers: list[InstanceWorker] = []
        """One per active instance while the version serves."""
        context.on_unavailable = self._report_unavailable

    @property
    def config(self) -> ModelConfig:
        return self.context.config

    @property
    def decoupled(self) -> bool:
        return self.context.decoupled

    @property
    def in_flight(self) -> int:
        """Requests admitted and not settled yet."""
        return self.admissions.requests

    @property
    def executing(self) -> int:
        """Batches handed to an instance that have not returned yet."""
        return self.admissions.executing

    def _report_unavailable(self, reason: str) -> None:
        if self.state is ModelState.READY:
            self.state, self.reason = ModelState.UNAVAILABLE, reason
            log.error(
                "model '%s' version %d is unavailable: %s",
                self.name,
                self.version,
                reason,
                extra={"model": self.name},
            )

    async def instances_ready(self) -> bool:
        """Whether every instance overriding :meth:`ModelInstance.ready` says it can serve
        (each asked at once, with a timeout; an error or no answer counts as not ready)."""
        hooked = [
            item
            for item in self.instances
            if getattr(item.instance.ready, "__func__", None) is not ModelInstance.ready
        ]
        if not hooked or self.state is not ModelState.READY:
            return self.state is ModelState.READY
        answers = [False] * len(hooked)

        async def ask(index: int, item: LoadedInstance) -> None:
            try:
                with anyio.fail_after(INSTANCE_READY_TIMEOUT_SECONDS):
                    answers[index] = await _ask_ready(item.instance) is True
            except Exception as exc:
                log.warning(
                    "the readiness check of instance '%s' failed: %s",
                    item.context.name,
                    "timed out" if isinstance(exc, TimeoutError) else exc,
                    extra={"model": self.name},
                )

        async with anyio.create_task_group() as checks:
            for index, item in enumerate(hooked):
                checks.start_soon(ask, index, item)
        return all(answers)

    def pending(self) -> int:
        """Requests accepted and not yet started: in the scheduler, or handed to an instance
        thread ahead of time (``nv_inference_pending_request_count``)."""
        return self.scheduler.pending() + sum(worker.queued for worker in self.workers)

    def stop(self) -> None:
        """Ask :meth:`run` to stop accepting, drain and finalize (returns at once)."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load, serve until :meth:`stop`, then unload. Reports started once ready.

        :raises KernelError: before ready, the reason the load failed (finalized already).
        """
        model: Model | None = None
        model_initialized = False
        ready: list[LoadedInstance] = []
        try:
            try:
                model = self.backend.create_model(self.context)
                if self.context.auto_complete:
                    completed = await call_hook(model.auto_complete_config, self.context.config)
                    self.context.config = normalize_config(
                        completed,
                        "<auto-completed config>",
                        gpus=len(visible_gpus()),
                        preferred_kind=self.backend.attributes.preferred_instance_kind,
                    )
                    self.scheduler.close(KernelError(Status.UNAVAILABLE, "replaced"))
                    self.scheduler = self._scheduler_factory(self.context.config)
                self.validator = RequestValidator(self.context.config)
                cache = self.config.response_cache
                if cache is not None and cache.enable and self.decoupled:
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"Response Cache does not currently support model {self.name} with"
                        " 'decoupled' transaction policy. Please disable the response cache.",
                    )
                samples = warmup_samples(self.config, self.context.model_dir)
                await call_hook(model.initialize, default=Model.initialize)
                model_initialized = True
                self.instances = [
                    LoadedInstance(ctx, model.create_instance(ctx), passive, limits)
                    for ctx, passive, limits in self._instance_contexts()
                ]
                limiter = self._rate_limiter()
                if limiter is not None:
                    for item in self.instances:
                        device = item.context.device_id
                        item.need = limiter.register(
                            item.limits, device if item.context.kind == "KIND_GPU" else CPU_DEVICE
                        )
                        item.limiter = limiter
                await self._initialize_instances(ready)
                if samples:
                    await self._warm_up(ready, samples)
                self.stats.memory_usage = await self._memory_usage(model)
            except Exception as exc:
                error = KernelError.wrap(exc)
                raise KernelError(
                    Status.UNAVAILABLE if error.status is Status.INTERNAL else error.status,
                    error.message,
                ) from exc
            active = [item for item in ready if not item.passive]
            if ready and not active:
                log.warning(
                    "every instance of model '%s' is passive: no request will be executed",
                    self.name,
                )
            self.workers = [
                InstanceWorker.for_instance(self, item, index, len(active))
                for index, item in enumerate(active)
            ]
            async with anyio.create_task_group() as workers:
                for worker in self.workers:
                    workers.start_soon(worker.run, name=f"worker {worker.item.context.name}")
                self.state = ModelState.READY
                task_status.started()
                await self._stop.wait()
                self.state = ModelState.UNLOADING
                await self._drain()
                workers.cancel_scope.cancel()
        finally:
            self.workers = []
            with anyio.CancelScope(shield=True):
                await self._finalize(model if model_initialized else None, ready)
                self.finished.set()

    async def _memory_usage(self, model: Model) -> list[MemoryUsage]:
        """What the backend says the loaded version holds (never fails the load)."""
        try:
            usage = await call_hook(model.memory_usage, default=Model.memory_usage)
        except Exception:
            log.warning("model '%s' could not report its memory usage", self.name, exc_info=True)
            return []
        return list(usage or [])

    def _rate_limiter(self) -> RateLimiter | None:
        """The server's rate limiter (``--rate-limit execution_count``), if it has one."""
        limiter = getattr(self.context.server, "rate_limiter", None)
        return limiter if isinstance(limiter, RateLimiter) else None

    def _instance_contexts(
        self,
    ) -> list[tuple[InstanceContext, bool, ModelRateLimiter | None]]:
        """Each instance's context, whether its group is ``passive``, and its group's
        ``rate_limiter``."""
        contexts: list[tuple[InstanceContext, bool, ModelRateLimiter | None]] = []
        gpus = visible_gpus()
        # An ensemble has no instance group: its one instance only awaits other models.
        groups = self.config.instance_group or [
            ModelInstanceGroup(name=self.name, kind=ModelInstanceGroupKind.MODEL, count=1)
        ]
        for group in groups:
            kind = f"KIND_{group.kind.name}"
            if group.kind == ModelInstanceGroupKind.GPU:
                if not gpus:
                    raise KernelError(
                        Status.UNAVAILABLE,
                        f"instance group '{group.name}' of model '{self.name}' asks for KIND_GPU,"
                        " but no GPU is usable on this machine",
                    )
                devices = list(group.gpus) or gpus
                missing = [d for d in devices if d not in gpus]
                if missing:
                    raise KernelError(
                        Status.UNAVAILABLE,
                        f"instance group '{group.name}' of model '{self.name}' asks for GPUs"
                        f" {missing}, but the usable GPUs are {gpus}",
                    )
            else:
                devices = [0]
            for device in devices:
                for index in range(group.count):
                    name = f"{group.name}_{len(contexts) if len(devices) > 1 else index}"
                    context = InstanceContext(
                        name=name,
                        kind=kind,
                        device_id=device,
                        model=self.context,
                        logger=logging.getLogger(f"kernel.model.{self.name}.{name}"),
                    )
                    contexts.append((context, group.passive, group.rate_limiter))
        return contexts

    async def _initialize_instances(self, ready: list[LoadedInstance]) -> None:
        errors: list[BaseException] = []

        async def initialize(item: LoadedInstance) -> None:
            try:
                await call_hook(item.instance.initialize, default=ModelInstance.initialize)
            except Exception as exc:
                errors.append(exc)
            else:
                ready.append(item)

        if self.backend.attributes.parallel_instance_loading and len(self.instances) > 1:
            async with anyio.create_task_group() as tg:
                for item in self.instances:
                    tg.start_soon(initialize, item)
        else:
            for item in self.instances:
                await initialize(item)
                if errors:
                    break
        if errors:
            raise errors[0]

    async def _warm_up(self, ready: list[LoadedInstance], samples: list[WarmupSample]) -> None:
        """Run ``model_warmup`` on every instance, before the version reports READY."""
        implicit: dict[str, Any] = {}
        if isinstance(self.scheduler, SequenceBatcher):
            # A sequence model takes control and state inputs the samples need not spell out.
            tensors = self.scheduler.tensors
            implicit.update(tensors.controls(1, start=True, end=True))
            implicit.update(tensors.initial_state())
        for item in ready:
            await run_warmup(
                samples,
                item.instance,
                item.context,
                batching=self.config.max_batch_size > 0,
                decoupled=self.decoupled,
                implicit=implicit,
            )
        log.info(
            "model '%s' version %d warmed up", self.name, self.version, extra={"model": self.name}
        )

    async def _finalize(self, model: Model | None, ready: list[LoadedInstance]) -> None:
        for queued in self.scheduler.close(
            KernelError(Status.UNAVAILABLE, f"model '{self.name}' is unloading")
        ):
            queued.fail(KernelError(Status.UNAVAILABLE, f"model '{self.name}' was unloaded"))
        for item in reversed(ready):
            try:
                await call_hook(item.instance.finalize, default=ModelInstance.finalize)
            except Exception:
                log.exception(
                    "instance '%s' of model '%s' failed to finalize", item.context.name, self.name
                )
        if model is not None:
            try:
                await call_hook(model.finalize, default=Model.finalize)
            except Exception:
                log.exception("model '%s' failed to finalize", self.name)

    async def _drain(self) -> None:
        """Wait (up to the drain timeout) until every admitted request was settled and no batch
        executes. Requests still queued then were cancelled by their clients (settled
        already): :meth:`_finalize` fails them."""
        with anyio.move_on_after(self.drain_timeout):
            await self.admissions.drained()


async def _ask_ready(instance: ModelInstance) -> object:
    """``instance.ready()``; a plain ``def`` in a worker thread that a timeout abandons."""
    ready = instance.ready
    if is_async(ready):
        return await ready()  # type: ignore[misc]
    answer = await anyio.to_thread.run_sync(ready, abandon_on_cancel=True)
    if inspect.isawaitable(answer):
        return await answer
    return answer
