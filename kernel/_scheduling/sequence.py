"""Triton's sequence batcher (``sequence_batching { ... }``) for stateful models.

Requests carrying the same correlation id form a sequence, opened by a request flagged START and
closed by one flagged END. The requests of one sequence execute one at a time, in order: the
next one waits until the previous one got its final response, so implicit state (and any state
the model keeps itself) is never read before it was written.

A sequence holds a *place* from its first request until its END request finished or it stayed
idle longer than ``max_sequence_idle_microseconds``; sequences that find no free place wait in a
backlog, in arrival order. The two strategies differ in what a place is:

* ``direct`` (the default): a batch slot of one instance, ``max(1, max_batch_size)`` per
  instance. The sequence executes only on that instance, so a model may keep per-slot state.
  An instance's batch is the next request of each of its slots' sequences.
* ``oldest``: one of ``max_candidate_sequences`` places (0: no limit) on no particular instance.
  Any instance takes a batch of the candidates' next requests, oldest first and at most one per
  sequence, cut with the dynamic batcher's rule (preferred sizes, queue delay, shapes).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import betterproto2
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest, InferenceResponse, RequestFlags
from kernel._proto.inference import ModelConfig
from kernel._scheduling._base import Scheduler
from kernel._scheduling._batch_policy import BatchPolicy
from kernel._scheduling._ordering import Release, ResponseOrder
from kernel._scheduling._sequence_tensors import SequenceTensors
from kernel._scheduling._wakeup import Wakeup, now_ns, wait_for

__all__ = ["SequenceBatcher"]

DEFAULT_IDLE_US = 1_000_000
"""Triton's ``max_sequence_idle_microseconds`` when the config leaves it 0."""


@dataclass(eq=False, slots=True)
class _Place:
    """Where a sequence runs: a batch slot of instance ``worker``, or (``oldest``) anywhere."""

    worker: int | None
    index: int
    sequence: _Sequence | None = None


@dataclass(eq=False, slots=True)
class _Sequence:
    corrid: int | str
    state: dict[str, npt.NDArray[Any]]
    queue: deque[InferenceRequest] = field(default_factory=deque)
    place: _Place | None = None
    current: InferenceRequest | None = None
    """The request executing now (until its final response)."""
    ended: bool = False
    """END was enqueued: only a request flagged START may follow."""
    last_ns: int = 0
    intercepted: InferenceRequest | None = None
    """The request whose responses are watched (a rescheduled one is watched once)."""

    @property
    def idle(self) -> bool:
        return not self.queue and self.current is None

    def head(self) -> InferenceRequest | None:
        """The next request to execute, once the previous one finished (cancelled ones are
        answered and skipped)."""
        if self.current is not None:
            return None
        while self.queue and self.queue[0].is_cancelled():
            self.queue.popleft().fail(KernelError(Status.CANCELLED, "request cancelled"))
        return self.queue[0] if self.queue else None


class _Direct:
    """Places are batch slots pinned to instances; each instance batches its own slots."""

    def __init__(self, slots_per_worker: int, min_utilization: float, delay_us: int) -> None:
        self.slots_per_worker = slots_per_worker
        self.needed = math.ceil(min_utilization * slots_per_worker) if delay_us else 0
        self.delay_ns = delay_us * 1000
        self.slots: dict[int, list[_Place]] = {}

    def register(self, worker: int) -> bool:
        if worker in self.slots:
            return False
        self.slots[worker] = [_Place(worker, i) for i in range(self.slots_per_worker)]
        return True

    def free_place(self) -> _Place | None:
        """A free slot on the least occupied instance, so sequences spread over instances."""
        best: _Place | None = None
        best_load = 0
        for slots in self.slots.values():
            free = [p for p in slots if p.sequence is None]
            load = len(slots) - len(free)
            if free and (best is None or load < best_load):
                best, best_load = free[0], load
        return best

    def vacate(self, place: _Place) -> None:
        place.sequence = None

    def ready(self, worker: int) -> list[tuple[_Sequence, InferenceRequest]]:
        found = []
        for place in self.slots.get(worker, ()):
            sequence = place.sequence
            head = sequence.head() if sequence is not None else None
            if sequence is not None and head is not None:
                found.append((sequence, head))
        return found

    def decide(
        self, ready: list[tuple[_Sequence, InferenceRequest]], now: int
    ) -> tuple[int, int | None]:
        """Send every ready slot, unless ``minimum_slot_utilization`` asks to wait (up to the
        strategy's ``max_queue_delay_microseconds``) for more slots to become ready."""
        if not ready:
            return 0, None
        if len(ready) < self.needed:
            oldest = min(request.enqueued_ns for _, request in ready)
            if now - oldest < self.delay_ns:
                return 0, oldest + self.delay_ns
        return len(ready), None


class _Oldest:
    """Places are candidate seats on no instance; batches take the oldest next requests."""

    def __init__(self, capacity: int, policy: BatchPolicy) -> None:
        self.capacity = capacity
        self.policy = policy
        self.taken = 0

    def register(self, worker: int) -> bool:
        return False

    def free_place(self) -> _Place | None:
        if self.capacity and self.taken >= self.capacity:
            return None
        self.taken += 1
        return _Place(None, self.taken)

    def vacate(self, place: _Place) -> None:
        place.sequence = None
        self.taken -= 1

    def ready(
        self, worker: int, sequences: list[_Sequence]
    ) -> list[tuple[_Sequence, InferenceRequest]]:
        found = []
        for sequence in sequences:
            head = sequence.head() if sequence.place is not None else None
            if head is not None:
                found.append((sequence, head))
        found.sort(key=lambda pair: pair[1].enqueued_ns)
        return found

    def decide(
        self, ready: list[tuple[_Sequence, InferenceRequest]], now: int
    ) -> tuple[int, int | None]:
        return self.policy.decide([request for _, request in ready], now)


class SequenceBatcher(Scheduler):
    """Schedules the requests of a stateful model by correlation id (see the module doc)."""

    def __init__(self, config: ModelConfig, model_dir: Path | None = None) -> None:
        settings = config.sequence_batching
        if settings is None:
            raise ValueError("SequenceBatcher needs a config with sequence_batching")
        self.model_name = config.name
        self.tensors = SequenceTensors(config, model_dir)
        self.idle_ns = (settings.max_sequence_idle_microseconds or DEFAULT_IDLE_US) * 1000
        self._order: ResponseOrder | None = None
        strategy, chosen = betterproto2.which_one_of(settings, "strategy_choice")
        self._strategy: _Direct | _Oldest
        if strategy == "oldest" and chosen is not None:
            policy = BatchPolicy.from_config(
                config, chosen.preferred_batch_size, chosen.max_queue_delay_microseconds
            )
            self._strategy = _Oldest(max(0, chosen.max_candidate_sequences), policy)
            if chosen.preserve_ordering:
                self._order = ResponseOrder()
        else:
            direct = settings.direct
            self._strategy = _Direct(
                max(1, config.max_batch_size),
                direct.minimum_slot_utilization if direct is not None else 0.0,
                direct.max_queue_delay_microseconds if direct is not None else 0,
            )
        self._sequences: dict[int | str, _Sequence] = {}
        self._backlog: deque[_Sequence] = deque()
        self._wakeup = Wakeup()
        self._closed: KernelError | None = None
        self.iterative = settings.iterative_sequence
        """``iterative_sequence``: each request is a whole sequence, which the backend
        executes again and again by rescheduling it until its final response."""
        self._iterations = itertools.count(1)

    # -- accepting ---------------------------------------------------------------------------

    def enqueue(self, request: InferenceRequest) -> None:
        if self._closed is not None:
            raise self._closed
        model = self.model_name
        if request.batch_size > 1:
            raise KernelError(
                Status.INVALID_ARG,
                f"inference request to model '{model}' must specify batch-size 1 due to"
                " requirements of sequence batcher",
            )
        corrid = request.correlation_id
        if self.iterative:
            self._enqueue_iterative(request)
            return
        if corrid in (0, ""):
            raise KernelError(
                Status.INVALID_ARG,
                f"inference request to model '{model}' must specify a non-zero or non-empty"
                " correlation ID",
            )
        start = bool(request.flags & RequestFlags.SEQUENCE_START)
        end = bool(request.flags & RequestFlags.SEQUENCE_END)
        now = now_ns()
        sequence = self._sequences.get(corrid)
        if sequence is not None and sequence.idle and now - sequence.last_ns > self.idle_ns:
            self._retire(sequence)
            sequence = None
        if not start and (sequence is None or sequence.ended):
            raise KernelError(
                Status.INVALID_ARG,
                f"inference request for sequence {corrid} to model '{model}' must specify the"
                " START flag on the first request of the sequence",
            )
        request.inputs.update(self.tensors.controls(corrid, start=start, end=end))
        if sequence is None:
            sequence = _Sequence(corrid, self.tensors.initial_state())
            self._sequences[corrid] = sequence
            self._seat(sequence)
        if start:
            # A START for a sequence still in progress begins a new one in its place, after
            # the requests already queued (Triton ends the previous one early the same way).
            sequence.ended = False
        sequence.ended = sequence.ended or end
        sequence.queue.append(request)
        sequence.last_ns = now
        self._wakeup.notify()

    def _enqueue_iterative(self, request: InferenceRequest) -> None:
        """One request opens (and is) a sequence: the scheduler sets its START control and
        flag for the first execution; the sequence ends with the request's final response."""
        corrid = request.correlation_id
        key: int | str = (
            corrid if corrid not in (0, "") else f"\0iterative-{next(self._iterations)}"
        )
        request.flags |= RequestFlags.SEQUENCE_START
        request.inputs.update(self.tensors.controls(corrid, start=True, end=False))
        sequence = self._sequences.get(key)
        if sequence is None:
            sequence = _Sequence(key, self.tensors.initial_state())
            self._sequences[key] = sequence
            self._seat(sequence)
        sequence.ended = True
        sequence.queue.append(request)
        sequence.last_ns = now_ns()
        self._wakeup.notify()

    def reschedule(self, request: InferenceRequest) -> None:
        if not self.iterative:
            super().reschedule(request)
        sequence = next((s for s in self._sequences.values() if s.current is request), None)
        if sequence is None:
            raise KernelError(
                Status.INTERNAL, f"model '{self.model_name}' rescheduled a request it was not given"
            )
        # The next execution continues the sequence: no START, in the same place, first.
        request.flags &= ~RequestFlags.SEQUENCE_START
        request.inputs.update(self.tensors.controls(request.correlation_id, start=False, end=False))
        sequence.current = None
        sequence.queue.appendleft(request)
        sequence.last_ns = now_ns()
        self._wakeup.notify()

    def _intercept(self, sequence: _Sequence, request: InferenceRequest) -> None:
        """Watch the responses of ``request``, about to execute: keep its state outputs, note
        when it finished, and keep the response order if asked."""
        arrive = self._order.track(request) if self._order is not None else None
        wanted = request.requested_output_names
        request.requested_output_names = self.tensors.request_state(wanted)

        def intercept(response: InferenceResponse, release: Release) -> None:
            self.tensors.capture(response, sequence.state, wanted)
            if response.final:
                self._finished(sequence)
            if arrive is not None:
                arrive(response, release)
            else:
                release(response)

        request.intercept_responses(intercept, holds=arrive is not None)

    # -- places ------------------------------------------------------------------------------

    def _seat(self, sequence: _Sequence) -> None:
        place = self._strategy.free_place()
        if place is None:
            self._backlog.append(sequence)
        else:
            place.sequence, sequence.place = sequence, place

    def _retire(self, sequence: _Sequence) -> None:
        """Forget a finished or idle sequence and give its place to the backlog's oldest."""
        if self._sequences.get(sequence.corrid) is sequence:
            del self._sequences[sequence.corrid]
        if sequence.place is not None:
            self._strategy.vacate(sequence.place)
            sequence.place = None
        self._fill()

    def _fill(self) -> None:
        while self._backlog:
            place = self._strategy.free_place()
            if place is None:
                return
            sequence = self._backlog.popleft()
            place.sequence, sequence.place = sequence, place
            self._wakeup.notify()  # its instance's worker may be waiting

    def _finished(self, sequence: _Sequence) -> None:
        """The executing request of ``sequence`` got its final response."""
        sequence.current = None
        sequence.last_ns = now_ns()
        if sequence.ended and not sequence.queue:
            self._retire(sequence)
        self._wakeup.notify()

    def _reap(self, now: int) -> int | None:
        """Release sequences idle too long; when another waits for a place, the time to look
        again (otherwise idle sequences are released lazily)."""
        next_at: int | None = None
        for sequence in list(self._sequences.values()):
            if not sequence.idle:
                continue
            expires = sequence.last_ns + self.idle_ns
            if now > expires:
                self._retire(sequence)
            elif self._backlog and sequence.place is not None:
                next_at = expires if next_at is None else min(next_at, expires)
        return next_at

    # -- batches -----------------------------------------------------------------------------

    def _ready(self, worker: int) -> list[tuple[_Sequence, InferenceRequest]]:
        if isinstance(self._strategy, _Direct):
            return self._strategy.ready(worker)
        return self._strategy.ready(worker, list(self._sequences.values()))

    def _start(self, sequence: _Sequence) -> InferenceRequest:
        request = sequence.queue.popleft()
        if request.flags & RequestFlags.SEQUENCE_START:
            sequence.state = self.tensors.initial_state()
        request.inputs.update(sequence.state)
        sequence.current = request
        if sequence.intercepted is not request:
            sequence.intercepted = request
            self._intercept(sequence, request)
        return request

    async def next_batch(self, worker: int = 0) -> list[InferenceRequest]:
        if self._strategy.register(worker):
            self._fill()
        while True:
            event = self._wakeup.arm()
            if self._closed is not None:
                await anyio.sleep_forever()  # closed: the worker waits to be cancelled
            now = now_ns()
            reap_at = self._reap(now)
            ready = self._ready(worker)
            count, delay_until = self._strategy.decide(ready, now)
            if count:
                return [self._start(sequence) for sequence, _ in ready[:count]]
            deadlines = [d for d in (delay_until, reap_at) if d is not None]
            await wait_for(event, min(deadlines) if deadlines else None)

    def pending(self) -> int:
        return sum(len(s.queue) for s in self._sequences.values())

    def close(self, error: KernelError) -> list[InferenceRequest]:
        self._closed = error
        queued: list[InferenceRequest] = []
        for sequence in self._sequences.values():
            queued.extend(sequence.queue)
            sequence.queue.clear()
        self._wakeup.notify()
        return queued
