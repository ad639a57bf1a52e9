"""Feeding one model instance: its :class:`InstanceWorker` takes batches from the version's
scheduler, hands them to the instance, and settles and accounts each batch once it returned.

A version starts one worker per active instance; the variant is picked once, from what the
instance implements (:meth:`InstanceWorker.for_instance`):

- :class:`ThreadWorker`: a plain ``def execute``, run on the instance's own thread
  (``kernel._instance_thread``), which holds several batches ahead where the scheduler allows;
- :class:`SubmitWorker`: an instance implementing ``ModelInstance.submit`` (say, a model in its
  own process): batches go out on the loop and come back through a ``done`` callback;
- :class:`AsyncWorker`: an ``async def execute`` on the loop: one batch at a time, up to
  ``overlapping_batches`` at once, or (an ensemble's scheduler) a task per batch.

Behind the default scheduler the thread and submit workers are fed by callbacks alone
(:class:`Feeder`): a request that finds a free slot starts from within its admission.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from kernel import _log_output
from kernel._admissions import Admissions
from kernel._backend import InstanceContext, ModelContext, ModelInstance
from kernel._errors import KernelError, Status
from kernel._hooks import is_async, is_default
from kernel._inference import InferenceRequest
from kernel._instance_thread import InstanceThread
from kernel._proto.inference import ModelRateLimiter
from kernel._scheduling import DirectScheduler, Scheduler
from kernel._scheduling._rate_limiter import Need, RateLimiter
from kernel._statistics import ModelStatistics

__all__ = [
    "AsyncWorker",
    "Feeder",
    "InstanceWorker",
    "LoadedInstance",
    "SubmitWorker",
    "ThreadWorker",
    "VersionView",
    "batches_ahead",
]

log = logging.getLogger("kernel.models")


@dataclass(slots=True)
class LoadedInstance:
    """An instance a model version created, with what its instance group says about it."""

    context: InstanceContext
    instance: ModelInstance
    passive: bool = False
    """``instance_group.passive``: loaded (and warmed up), but given no requests."""
    limits: ModelRateLimiter | None = None
    """``instance_group.rate_limiter``: the resources and priority it executes with."""
    need: Need | None = None
    """What the server's rate limiter counts for it (set when the server rate-limits)."""
    limiter: RateLimiter | None = None
    """The server's rate limiter, when it counts :attr:`need`."""


class VersionView(Protocol):
    """What a worker reads of the version it feeds (a :class:`~kernel._models.ModelVersion`)."""

    name: str
    context: ModelContext
    scheduler: Scheduler
    stats: ModelStatistics
    admissions: Admissions
    traced: int
    """Traced requests in flight: 0 skips the compute timestamps per batch."""

    @property
    def decoupled(self) -> bool: ...


def batches_ahead(
    scheduler: Scheduler, limit: int, active_instances: int, *, ordered: bool = False
) -> int:
    """How many batches a worker hands its instance at once (at most ``limit``).

    The scheduler decides (``batches_ahead``, or ``ordered_batches_ahead`` for an instance that
    runs the batches it holds in order by itself). With several instances a worker hands at
    most two: a request queued behind a long batch would wait while another instance idles.
    """
    most = scheduler.batches_ahead
    if ordered and scheduler.ordered_batches_ahead is not None:
        most = scheduler.ordered_batches_ahead
    ahead = min(most, limit)
    return min(ahead, 2) if active_instances > 1 else ahead


class InstanceWorker(ABC):
    """Feeds one instance of a model version until cancelled (unload), in the version's task
    group; what every variant shares: settling and accounting a returned batch."""

    def __init__(self, version: VersionView, item: LoadedInstance, index: int) -> None:
        self.version = version
        self.item = item
        self.index = index
        """The instance's position among the version's active ones (``next_batch(worker)``)."""
        self.scheduler = version.scheduler
        self.admissions = version.admissions
        self.name = version.name
        self.decoupled = version.decoupled
        self._stats = version.stats

    @staticmethod
    def for_instance(
        version: VersionView, item: LoadedInstance, index: int, active_instances: int
    ) -> InstanceWorker:
        """The worker that fits what ``item``'s instance implements (once it is initialized)."""
        instance = item.instance
        scheduler = version.scheduler
        if not is_async(instance.execute):
            # Under the rate limiter a batch waits for its resources, not in the thread's queue.
            depth = (
                1
                if item.need is not None
                else batches_ahead(scheduler, scheduler.batches_ahead, active_instances)
            )
            return ThreadWorker(version, item, index, depth)
        if scheduler.overlapping:
            return AsyncWorker(version, item, index, None)
        limit = instance.overlapping_batches
        ahead = batches_ahead(scheduler, limit, active_instances, ordered=limit > 1)
        if item.need is None and not is_default(instance.submit, ModelInstance.submit):
            return SubmitWorker(version, item, index, ahead)
        return AsyncWorker(version, item, index, ahead)

    @abstractmethod
    async def run(self) -> None:
        """Feed the instance until cancelled; batches still out are then answered or failed."""

    @property
    def queued(self) -> int:
        """Batches handed to the instance ahead of time and not started yet."""
        return 0

    def _unloading(self) -> KernelError:
        return KernelError(Status.UNAVAILABLE, f"model '{self.name}' is unloading")

    async def _acquire(
        self, batch: list[InferenceRequest], thread: InstanceThread | None = None
    ) -> None:
        """Wait for the rate limiter; a batch whose wait is cancelled (unload) is answered."""
        limiter, need = self.item.limiter, self.item.need
        assert limiter is not None and need is not None
        try:
            await limiter.acquire(need)
        except BaseException:
            if thread is not None:
                thread.release()
            for request in batch:
                request.fail(self._unloading())
            raise

    def _executed(
        self,
        batch: list[InferenceRequest],
        times: tuple[int, int, int] | None,
        error: BaseException | None,
        start: int,
        end: int,
    ) -> None:
        """Settle and account a batch that ``execute`` returned from (or raised out of);
        ``times`` is the split the instance reported for it, if any."""
        self.admissions.batch_ended()
        failure: KernelError | None = None
        if error is not None:
            failure = KernelError.wrap(error)
            if not isinstance(error, KernelError):
                log.debug("model '%s' execute raised", self.name, exc_info=error)
        if times is None:
            times = (0, end - start, 0)
        if self.version.traced:
            _stamp_compute(batch, times, start, end)
        for request in batch:  # usually each was answered: nothing to settle, no call
            if request.rescheduled or not request.answered:
                self._settle(batch, failure)
                break
        stats = self._stats
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


class ThreadWorker(InstanceWorker):
    """Feeds a plain ``def execute`` to the instance's own thread (see ``_instance_thread``).

    The thread holds up to ``depth`` batches: unbatched requests go over several at a time, so
    the thread never idles waiting for the loop; batching schedulers hand one, so a batch forms
    while the previous one runs.
    """

    def __init__(self, version: VersionView, item: LoadedInstance, index: int, depth: int) -> None:
        super().__init__(version, item, index)
        self.depth = depth
        self.thread: InstanceThread | None = None
        """While the worker runs."""

    @property
    def queued(self) -> int:
        thread = self.thread
        return 0 if thread is None else thread.queued

    async def run(self) -> None:
        item, depth = self.item, self.depth
        thread = self.thread = InstanceThread(item.context.name, depth=depth)
        run = _batch_runner(
            item.instance.execute,
            item.context,
            skip_cancelled=depth > 1,
            stamp_start=self.decoupled,
        )
        executed = self._executed
        thread.start()
        feeder: Feeder | None = None
        try:
            scheduler = self.scheduler
            if (
                item.need is None
                and isinstance(scheduler, DirectScheduler)
                and not scheduler.overlapping
            ):
                loop = asyncio.get_running_loop()
                admissions = self.admissions

                def submit(request: InferenceRequest) -> None:
                    if feeder is None or feeder.stopped:  # the thread takes no more batches
                        request.fail(self._unloading())
                        return
                    admissions.executing += 1
                    thread.submit(run, [request], executed)

                tracer = getattr(self.version.context.server, "tracer", None)

                def start(request: InferenceRequest) -> None:
                    if tracer is not None and tracer.active:
                        # On the loop's next turn, as from a worker task: the admission sets
                        # the request's trace (execute may read it) before the thread runs it.
                        loop.call_soon(submit, request)
                    else:  # submit, inlined: once per request
                        admissions.executing += 1
                        thread.submit(run, [request], executed)

                feeder = Feeder(scheduler, depth, start)
                thread.on_free = feeder.release
                feeder.feed()
                await anyio.sleep_forever()
            limiter, need = item.limiter, item.need
            done: Callable[..., None] = executed
            if limiter is not None and need is not None:
                done = functools.partial(_executed_limited, limiter, need, executed)
            while True:
                await thread.reserve()
                try:
                    batch = await scheduler.next_batch(self.index)
                except BaseException:
                    thread.release()
                    raise
                if limiter is not None:
                    await self._acquire(batch, thread)
                self.admissions.executing += 1
                thread.submit(run, batch, done)
        finally:
            if feeder is not None:
                feeder.stop()
            thread.stop()
            with anyio.CancelScope(shield=True):  # a running batch cannot be interrupted
                await thread.wait_idle()
            self.thread = None


class SubmitWorker(InstanceWorker):
    """Feeds an instance that implements ``ModelInstance.submit``: up to ``ahead`` batches at
    once, each accounted when the instance calls its ``done`` (no task per batch); behind a
    DirectScheduler by callbacks alone (see :class:`Feeder`). When the worker is cancelled
    (unload), the batches still out fail."""

    def __init__(self, version: VersionView, item: LoadedInstance, index: int, ahead: int) -> None:
        super().__init__(version, item, index)
        self.ahead = ahead
        self._pending: dict[int, Callable[[BaseException | None], None]] = {}
        """The ``done`` of each batch still out, by number (what an unload fails)."""
        self._numbers = itertools.count()

    async def run(self) -> None:
        pending = self._pending
        feeder: Feeder | None = None
        try:
            scheduler = self.scheduler
            if isinstance(scheduler, DirectScheduler) and not scheduler.overlapping:
                tracer = getattr(self.version.context.server, "tracer", None)
                loop = asyncio.get_running_loop()

                submit = self._submit

                def start(request: InferenceRequest) -> None:
                    if tracer is not None and tracer.active:
                        # On the loop's next turn: an instance may answer within submit (the
                        # Python backend's quick answers), and the batch's compute timestamps
                        # go to the request's trace, which the admission sets after enqueue.
                        loop.call_soon(submit, [request], release)
                    else:
                        submit([request], release)

                feeder = Feeder(scheduler, self.ahead, start)
                release = feeder.release
                feeder.feed()
                await anyio.sleep_forever()
            slots = asyncio.Semaphore(self.ahead)
            while True:
                batch = await _take_batch(scheduler, slots, self.index)
                self._submit(batch, slots.release)
        finally:
            if feeder is not None:
                feeder.stop()
            unloading = self._unloading()
            for done in list(pending.values()):
                done(unloading)  # each takes itself out of pending

    def _submit(self, batch: list[InferenceRequest], release: Callable[[], None]) -> None:
        """Start one batch through ``submit``; account it when the instance says it is done,
        then ``release`` its slot."""
        pending = self._pending
        number = next(self._numbers)
        item = self.item
        self.admissions.executing += 1
        start = time.monotonic_ns()
        if self.decoupled:  # its response stats count from here
            for request in batch:
                request.started_ns = start

        def done(error: BaseException | None) -> None:
            if pending.pop(number, None) is None:
                return  # already failed (unload)
            times = item.context.take_reported_times()
            self._executed(batch, times, error, start, time.monotonic_ns())
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


class AsyncWorker(InstanceWorker):
    """Runs an ``async def execute`` on the loop: one batch at a time (``ahead`` 1), up to
    ``ahead`` at once, or (``ahead`` None: a scheduler whose batches overlap, the ensemble's)
    each batch in its own task as soon as it forms."""

    def __init__(
        self, version: VersionView, item: LoadedInstance, index: int, ahead: int | None
    ) -> None:
        super().__init__(version, item, index)
        self.ahead = ahead

    async def run(self) -> None:
        scheduler, index, ahead = self.scheduler, self.index, self.ahead
        if ahead is None:
            async with anyio.create_task_group() as batches:
                while True:
                    batches.start_soon(self._execute, await scheduler.next_batch(index))
        elif ahead == 1:
            while True:
                await self._execute(await scheduler.next_batch(index))
        else:
            await self._overlapping(ahead)

    async def _overlapping(self, ahead: int) -> None:
        """Hand the instance up to ``ahead`` batches at once, each in a plain asyncio task: an
        anyio ``start_soon`` costs ~35 us per batch (its cancel scope and bookkeeping,
        measured), a task ~1.5 us. What a task group does is done here: when the worker is
        cancelled (unload), the batches still running are cancelled and waited for."""
        slots = asyncio.Semaphore(ahead)
        running: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = await _take_batch(self.scheduler, slots, self.index)
                task = loop.create_task(self._execute(batch, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            if running:
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(*running, return_exceptions=True)

    async def _execute(
        self, batch: list[InferenceRequest], slot: asyncio.Semaphore | None = None
    ) -> None:
        """Run ``execute`` on one batch (then give back ``slot``, if it holds one)."""
        item = self.item
        limiter = item.limiter
        if limiter is not None:
            await self._acquire(batch)
        self.admissions.executing += 1
        start = time.monotonic_ns()
        error: BaseException | None = None
        if self.decoupled:  # its response stats count from here
            for request in batch:
                request.started_ns = start
        token = _log_output.REQUEST_IDS.set(_ids(batch)) if _log_output.json_lines else None
        try:
            await item.instance.execute(batch)  # type: ignore[misc]
        except anyio.get_cancelled_exc_class():
            error = self._unloading()
            raise
        except Exception as exc:
            error = exc
        finally:
            if token is not None:
                _log_output.REQUEST_IDS.reset(token)
            times = item.context.take_reported_times()
            if limiter is not None and item.need is not None:
                limiter.release(item.need)
            self._executed(batch, times, error, start, time.monotonic_ns())
            if slot is not None:
                slot.release()


class Feeder:
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
            scheduler, taker = self._scheduler, self._taker
            while self._free:
                request = scheduler.take_or_wait(taker)
                if request is None:  # called back when the next request arrives
                    self._waiting = True
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


async def _take_batch(
    scheduler: Scheduler, slots: asyncio.Semaphore, index: int
) -> list[InferenceRequest]:
    """Wait for a free slot, then for the next batch (the slot is given back if that fails)."""
    await slots.acquire()
    try:
        return await scheduler.next_batch(index)
    except BaseException:
        slots.release()
        raise


def _executed_limited(
    limiter: RateLimiter, need: Need, done: Callable[..., None], *args: Any
) -> None:
    limiter.release(need)
    done(*args)


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


def _batch_runner(
    execute: Callable[[list[InferenceRequest]], object],
    context: InstanceContext,
    *,
    skip_cancelled: bool,
    stamp_start: bool,
) -> Callable[[list[InferenceRequest]], tuple[int, int, int] | None]:
    """What the instance thread runs per batch (one closure: no partial's keyword merge per
    batch).

    With ``skip_cancelled`` (batches handed over ahead of time), requests cancelled while their
    batch waited fail ``CANCELLED`` and the rest run; only for batches of independent requests,
    as a sequence batch keeps its slot positions. With ``stamp_start`` (a decoupled model), each
    request notes when it started: its response stats count from there.
    """

    def run(batch: list[InferenceRequest]) -> tuple[int, int, int] | None:
        """Run one batch; return the time split it reported, taken here because the thread
        may start the next batch before the loop has accounted this one."""
        if skip_cancelled:
            live = []
            for request in batch:
                if request.is_cancelled():
                    request.fail(KernelError(Status.CANCELLED, "request cancelled"))
                else:
                    live.append(request)
            batch = live
        if stamp_start:
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

    return run


def _ids(batch: list[InferenceRequest]) -> str:
    """The ids of a batch's requests, for its log lines (JSON format)."""
    return ",".join(r.id for r in batch if r.id)
