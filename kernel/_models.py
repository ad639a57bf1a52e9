"""One loaded model version: its lifecycle, its scheduler and its instance workers.

:meth:`ModelVersion.run` is the version's whole life as one task: create and initialize the model
and its instances, start one worker per instance in the version's own task group, report ready,
serve until told to stop, drain what was accepted, then finalize instances (last first) and the
model. Everything a load started is finalized on every path out, failures included.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from kernel import _log_output
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
from kernel._hooks import call_hook, is_async, is_default
from kernel._inference import InferenceRequest
from kernel._instance_thread import InstanceThread
from kernel._latency import LatencyConfig, LatencyRecorder
from kernel._proto.inference import (
    ModelConfig,
    ModelInstanceGroup,
    ModelInstanceGroupKind,
    ModelRateLimiter,
)
from kernel._repository import normalize_config
from kernel._scheduling import DirectScheduler, Scheduler, SequenceBatcher, scheduler_for
from kernel._scheduling._rate_limiter import CPU_DEVICE, Need, RateLimiter
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


@dataclass(slots=True)
class _Instance:
    context: InstanceContext
    instance: ModelInstance
    passive: bool = False
    """``instance_group.passive``: loaded (and warmed up), but given no requests."""
    limits: ModelRateLimiter | None = None
    """``instance_group.rate_limiter``: the resources and priority it executes with."""
    need: Need | None = None
    """What the server's rate limiter counts for it (set when the server rate-limits)."""


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
        self.in_flight = 0
        self.executing = 0
        self.traced = 0
        """Traced requests in flight (see kernel._tracing): 0 skips tracing per batch."""
        self.stamp_start = False
        """Whether batches note when ``execute`` took them (decoupled models' response stats);
        set when the workers start, once the config is final."""
        self.drain_timeout = drain_timeout
        self._scheduler_factory = scheduler_factory or (
            lambda config: scheduler_for(config, context.model_dir)
        )
        self.scheduler: Scheduler = self._scheduler_factory(context.config)
        self.validator = RequestValidator(context.config)
        self._stop = anyio.Event()
        self.finished = anyio.Event()
        self.instances: list[_Instance] = []
        self._threads: list[InstanceThread] = []
        context.on_unavailable = self._report_unavailable

    @property
    def config(self) -> ModelConfig:
        return self.context.config

    @property
    def decoupled(self) -> bool:
        return self.context.decoupled

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

        async def ask(index: int, item: _Instance) -> None:
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
        return self.scheduler.pending() + sum(thread.queued for thread in self._threads)

    def stop(self) -> None:
        """Ask :meth:`run` to stop accepting, drain and finalize (returns at once)."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load, serve until :meth:`stop`, then unload. Reports started once ready.

        :raises KernelError: before ready, the reason the load failed (finalized already).
        """
        model: Model | None = None
        model_initialized = False
        ready: list[_Instance] = []
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
                    _Instance(ctx, model.create_instance(ctx), passive, limits)
                    for ctx, passive, limits in self._instance_contexts()
                ]
                limiter = self._rate_limiter()
                if limiter is not None:
                    for item in self.instances:
                        device = item.context.device_id
                        item.need = limiter.register(
                            item.limits, device if item.context.kind == "KIND_GPU" else CPU_DEVICE
                        )
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
            async with anyio.create_task_group() as workers:
                for index, item in enumerate(active):
                    workers.start_soon(
                        self._worker, item, index, workers, name=f"worker {item.context.name}"
                    )
                self.state = ModelState.READY
                task_status.started()
                await self._stop.wait()
                self.state = ModelState.UNLOADING
                await self._drain()
                workers.cancel_scope.cancel()
        finally:
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

    async def _initialize_instances(self, ready: list[_Instance]) -> None:
        errors: list[BaseException] = []

        async def initialize(item: _Instance) -> None:
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

    async def _warm_up(self, ready: list[_Instance], samples: list[WarmupSample]) -> None:
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

    async def _finalize(self, model: Model | None, ready: list[_Instance]) -> None:
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
        """Wait (up to the drain timeout) until every accepted request got its final answer."""
        with anyio.move_on_after(self.drain_timeout):
            # Three counters changed from several places: polling them is simplest, and this
            # only runs while a version unloads.
            while self.in_flight or self.executing or self.scheduler.pending():  # noqa: ASYNC110
                await anyio.sleep(0.005)

    def _batches_ahead(self, limit: int) -> int:
        """How many batches a worker hands its instance at once (at most ``limit``).

        The scheduler decides (``batches_ahead``). With several instances a worker hands at
        most two: a request queued behind a long batch would wait while another instance idles.
        """
        ahead = min(self.scheduler.batches_ahead, limit)
        active = sum(not item.passive for item in self.instances)
        return min(ahead, 2) if active > 1 else ahead

    async def _worker(self, item: _Instance, index: int, workers: TaskGroup) -> None:
        self.stamp_start = self.decoupled
        if not is_async(item.instance.execute):
            await self._thread_worker(item, index)
            return
        if self.scheduler.overlapping:
            while True:
                batch = await self.scheduler.next_batch(index)
                workers.start_soon(self._execute, item, batch)
        ahead = self._batches_ahead(item.instance.overlapping_batches)
        if item.need is None and not is_default(item.instance.submit, ModelInstance.submit):
            await self._submit_worker(item, index, ahead)
            return
        if ahead == 1:
            while True:
                await self._execute(item, await self.scheduler.next_batch(index))
        await self._overlapping_worker(item, index, ahead)

    async def _take_batch(self, slots: asyncio.Semaphore, index: int) -> list[InferenceRequest]:
        """Wait for a free slot, then for the next batch (the slot is given back if that fails)."""
        await slots.acquire()
        try:
            return await self.scheduler.next_batch(index)
        except BaseException:
            slots.release()
            raise

    async def _submit_worker(self, item: _Instance, index: int, ahead: int) -> None:
        """Feed an instance that implements ``ModelInstance.submit``: up to ``ahead`` batches
        at once, each accounted when the instance calls its ``done`` (no task per batch);
        behind a DirectScheduler by callbacks alone (see _Feeder). When the worker is
        cancelled (unload), the batches still out fail."""
        pending: dict[int, Callable[[BaseException | None], None]] = {}
        numbers = itertools.count()
        feeder: _Feeder | None = None
        try:
            if isinstance(self.scheduler, DirectScheduler) and not self.scheduler.overlapping:
                tracer = getattr(self.context.server, "tracer", None)
                loop = asyncio.get_running_loop()

                def submit(request: InferenceRequest) -> None:
                    assert feeder is not None
                    self._submit(item, [request], feeder.release, pending, next(numbers))

                def start(request: InferenceRequest) -> None:
                    if tracer is not None and tracer.active:
                        # On the loop's next turn: an instance may answer within submit (the
                        # Python backend's quick answers), and the batch's compute timestamps
                        # go to the request's trace, which the admission sets after enqueue.
                        loop.call_soon(submit, request)
                    else:
                        submit(request)

                feeder = _Feeder(self.scheduler, ahead, start)
                feeder.feed()
                await anyio.sleep_forever()
            slots = asyncio.Semaphore(ahead)
            while True:
                batch = await self._take_batch(slots, index)
                self._submit(item, batch, slots.release, pending, next(numbers))
        finally:
            if feeder is not None:
                feeder.stop()
            unloading = KernelError(Status.UNAVAILABLE, f"model '{self.name}' is unloading")
            for done in list(pending.values()):
                done(unloading)  # each takes itself out of pending

    def _submit(
        self,
        item: _Instance,
        batch: list[InferenceRequest],
        release: Callable[[], None],
        pending: dict[int, Callable[[BaseException | None], None]],
        number: int,
    ) -> None:
        """Start one batch through ``submit``; account it when the instance says it is done,
        then ``release`` its slot."""
        self.executing += 1
        start = time.monotonic_ns()
        if self.stamp_start:
            for request in batch:
                request.started_ns = start

        def done(error: BaseException | None) -> None:
            if pending.pop(number, None) is None:
                return  # already failed (unload)
            times = item.context.take_reported_times()
            self._executed(item, batch, times, error, start, time.monotonic_ns())
            release()

        pending[number] = done
        token = _log_output.REQUEST_IDS.set(_ids(batch)) if _log_output.json_lines else None
        try:
            item.instance.submit(batch, done)
        except Exception as exc:
            done(exc)
        finally:
            if token is not None:
                _log_output.REQUEST_IDS.reset(token)

    async def _overlapping_worker(self, item: _Instance, index: int, ahead: int) -> None:
        """Hand an ``async def execute`` up to ``ahead`` batches at once, each in a plain asyncio
        task: an anyio ``start_soon`` costs ~35 us per batch (its cancel scope and bookkeeping,
        measured), a task ~1.5 us. What the task group did is done here: when the worker is
        cancelled (unload), the batches still running are cancelled and waited for."""
        slots = asyncio.Semaphore(ahead)
        running: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = await self._take_batch(slots, index)
                task = loop.create_task(self._execute(item, batch, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            if running:
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(*running, return_exceptions=True)

    async def _execute(
        self,
        item: _Instance,
        batch: list[InferenceRequest],
        slot: asyncio.Semaphore | None = None,
    ) -> None:
        """Run an ``async def execute`` on the loop (then give back ``slot``, if it holds one)."""
        limiter = self._rate_limiter() if item.need is not None else None
        if limiter is not None and item.need is not None:
            await self._acquire(limiter, item.need, batch)
        self.executing += 1
        start = time.monotonic_ns()
        error: BaseException | None = None
        if self.stamp_start:
            for request in batch:
                request.started_ns = start
        token = _log_output.REQUEST_IDS.set(_ids(batch)) if _log_output.json_lines else None
        try:
            await item.instance.execute(batch)  # type: ignore[misc]
        except anyio.get_cancelled_exc_class():
            error = KernelError(Status.UNAVAILABLE, f"model '{self.name}' is unloading")
            raise
        except Exception as exc:
            error = exc
        finally:
            if token is not None:
                _log_output.REQUEST_IDS.reset(token)
            times = item.context.take_reported_times()
            if limiter is not None and item.need is not None:
                limiter.release(item.need)
            self._executed(item, batch, times, error, start, time.monotonic_ns())
            if slot is not None:
                slot.release()

    async def _thread_worker(self, item: _Instance, index: int) -> None:
        """Feed a plain ``def execute`` to the instance's own thread (see ``_instance_thread``).

        The thread holds as many batches as :meth:`_batches_ahead` allows: unbatched requests
        go over several at a time, so the thread never idles waiting for the loop; batching
        schedulers hand one, so a batch forms while the previous one runs.
        """
        limiter = self._rate_limiter()
        need = item.need
        # Under the rate limiter a batch waits for its resources, not in the thread's queue.
        depth = 1 if need is not None else self._batches_ahead(self.scheduler.batches_ahead)
        thread = InstanceThread(item.context.name, depth=depth)
        self._threads.append(thread)
        run = functools.partial(
            _run_batch,
            item.instance.execute,
            item.context,
            skip_cancelled=depth > 1,
            stamp_start=self.decoupled,
        )
        thread.start()
        feeder: _Feeder | None = None
        try:
            scheduler = self.scheduler
            if (
                need is None
                and isinstance(scheduler, DirectScheduler)
                and not scheduler.overlapping
            ):
                loop = asyncio.get_running_loop()

                def submit(request: InferenceRequest) -> None:
                    if feeder is None or feeder.stopped:  # the thread takes no more batches
                        request.fail(
                            KernelError(Status.UNAVAILABLE, f"model '{self.name}' is unloading")
                        )
                        return
                    batch = [request]
                    self.executing += 1
                    thread.submit(run, batch, functools.partial(self._executed, item, batch))

                tracer = getattr(self.context.server, "tracer", None)

                def start(request: InferenceRequest) -> None:
                    if tracer is not None and tracer.active:
                        # On the loop's next turn, as from a worker task: the admission sets
                        # the request's trace (execute may read it) before the thread runs it.
                        loop.call_soon(submit, request)
                    else:
                        submit(request)

                feeder = _Feeder(scheduler, depth, start)
                thread.on_free = feeder.release
                feeder.feed()
                await anyio.sleep_forever()
            while True:
                await thread.reserve()
                try:
                    batch = await self.scheduler.next_batch(index)
                except BaseException:
                    thread.release()
                    raise
                done = functools.partial(self._executed, item, batch)
                if limiter is not None and need is not None:
                    await self._acquire(limiter, need, batch, thread)
                    done = functools.partial(self._executed_limited, limiter, need, done)
                self.executing += 1
                thread.submit(run, batch, done)
        finally:
            if feeder is not None:
                feeder.stop()
            thread.stop()
            with anyio.CancelScope(shield=True):  # a running batch cannot be interrupted
                await thread.wait_idle()
            self._threads.remove(thread)

    async def _acquire(
        self,
        limiter: RateLimiter,
        need: Need,
        batch: list[InferenceRequest],
        thread: InstanceThread | None = None,
    ) -> None:
        """Wait for the rate limiter; a batch whose wait is cancelled (unload) is answered."""
        try:
            await limiter.acquire(need)
        except BaseException:
            if thread is not None:
                thread.release()
            for request in batch:
                request.fail(KernelError(Status.UNAVAILABLE, f"model '{self.name}' is unloading"))
            raise

    @staticmethod
    def _executed_limited(
        limiter: RateLimiter,
        need: Need,
        done: Callable[..., None],
        *args: object,
    ) -> None:
        limiter.release(need)
        done(*args)

    def _executed(
        self,
        item: _Instance,
        batch: list[InferenceRequest],
        times: tuple[int, int, int] | None,
        error: BaseException | None,
        start: int,
        end: int,
    ) -> None:
        """Settle and account a batch that ``execute`` returned from (or raised out of);
        ``times`` is the split the instance reported for it, if any."""
        self.executing -= 1
        failure: KernelError | None = None
        if error is not None:
            failure = KernelError.wrap(error)
            if not isinstance(error, KernelError):
                log.debug("model '%s' execute raised", self.name, exc_info=error)
        if times is None:
            times = (0, end - start, 0)
        if self.traced:
            _stamp_compute(batch, times, start, end)
        self._settle(batch, failure)
        stats = self.stats
        if len(batch) == 1:  # the common case, without the generators
            request = batch[0]
            queue_ns = start - request.enqueued_ns
            rows = request.batch_size
        else:
            queue_ns = sum(start - r.enqueued_ns for r in batch)
            rows = sum(r.batch_size for r in batch)
        if stats.latency is not None:
            stats.latency.execution([start - r.enqueued_ns for r in batch], times)
        stats.record_execution(rows, len(batch), times, queue_ns)

    def _settle(self, batch: list[InferenceRequest], error: KernelError | None) -> None:
        """Answer every request ``execute`` left unanswered (see the contract in backend.py)."""
        for request in batch:
            if request.rescheduled and error is None:
                request.rescheduled = False
                if not request.answered:
                    try:
                        self.scheduler.reschedule(request)  # executes again in a later batch
                    except KernelError as exc:
                        request.fail(exc)
                    continue
            if request.answered:
                continue
            if error is not None:
                request.fail(error)
            elif not (self.decoupled and request.sender_taken):
                request.fail(
                    KernelError(
                        Status.INTERNAL,
                        f"model '{self.name}' returned from execute without answering the request",
                    )
                )


class _Feeder:
    """Feeds an instance from a :class:`DirectScheduler` by callbacks alone: a request that
    finds a free slot starts from within ``enqueue``, and a slot freed by a finished batch takes
    the next queued request at once. The worker task only waits to be cancelled (unload). No
    future, task switch or semaphore per request (bench/RESULTS.md, issue 14)."""

    __slots__ = ("_feeding", "_free", "_scheduler", "_start", "_taker", "_waiting", "stopped")

    def __init__(
        self,
        scheduler: DirectScheduler,
        slots: int,
        start: Callable[[InferenceRequest], None],
    ) -> None:
        self._scheduler = scheduler
        self._free = slots
        self._start = start
        """Starts a one-request batch in a slot; :meth:`release` must follow once it is done."""
        self._taker = self.feed  # one bound method, registered again and again
        self._feeding = False  # in feed: a slot freed meanwhile is taken by its loop
        self._waiting = False  # registered with the scheduler (free slots, empty queue)
        self.stopped = False

    def feed(self) -> None:
        """Start queued requests while slots are free; then wait for the next request."""
        if self.stopped or self._feeding:
            return
        self._feeding = True
        self._waiting = False
        try:
            scheduler = self._scheduler
            while self._free:
                request = scheduler.take()
                if request is None:
                    self._waiting = True
                    scheduler.hand_over(self._taker)
                    return
                self._free -= 1
                self._start(request)
        finally:
            self._feeding = False

    def release(self) -> None:
        """A batch was accounted: its slot takes the next request (unless already waiting)."""
        self._free += 1
        if not self._waiting:
            self.feed()

    def stop(self) -> None:
        """Take no more requests."""
        self.stopped = True
        self._scheduler.withdraw(self._taker)


async def _ask_ready(instance: ModelInstance) -> object:
    """``instance.ready()``; a plain ``def`` in a worker thread that a timeout abandons."""
    ready = instance.ready
    if is_async(ready):
        return await ready()  # type: ignore[misc]
    answer = await anyio.to_thread.run_sync(ready, abandon_on_cancel=True)
    if inspect.isawaitable(answer):
        return await answer
    return answer


def _stamp_compute(
    batch: list[InferenceRequest], times: tuple[int, int, int], start: int, end: int
) -> None:
    """Triton's compute timestamps on the traced requests of a batch."""
    for request in batch:
        trace = request.trace
        if trace is not None:
            trace.stamp("COMPUTE_START", start)
            trace.stamp("COMPUTE_INPUT_END", start + times[0])
            trace.stamp("COMPUTE_OUTPUT_START", end - times[2])
            trace.stamp("COMPUTE_END", end)


def _run_batch(
    execute: Callable[[list[InferenceRequest]], object],
    context: InstanceContext,
    batch: list[InferenceRequest],
    *,
    skip_cancelled: bool,
    stamp_start: bool = False,
) -> tuple[int, int, int] | None:
    """Run one batch in the instance thread; return the time split it reported, taken here
    because the thread may start the next batch before the loop has accounted this one.

    With ``skip_cancelled`` (a batch handed over ahead of time), requests cancelled while it
    waited fail ``CANCELLED`` and the rest run; only for batches of independent requests, as a
    sequence batch keeps its slot positions.
    """
    if skip_cancelled:
        live = []
        for request in batch:
            if request.is_cancelled():
                request.fail(KernelError(Status.CANCELLED, "request cancelled"))
            else:
                live.append(request)
        batch = live
    if stamp_start:  # a decoupled model: its response stats count from here
        start = time.monotonic_ns()
        for request in batch:
            request.started_ns = start
    token = _log_output.REQUEST_IDS.set(_ids(batch)) if _log_output.json_lines else None
    try:
        if batch:
            execute(batch)
    except BaseException:
        context.take_reported_times()  # a failed batch's split counts for nothing
        raise
    finally:
        if token is not None:
            _log_output.REQUEST_IDS.reset(token)
    return context.take_reported_times()


def _ids(batch: list[InferenceRequest]) -> str:
    """The ids of a batch's requests, for its log lines (JSON format)."""
    return ",".join(r.id for r in batch if r.id)
