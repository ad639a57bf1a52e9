"""Triton's dynamic batcher (``dynamic_batching { ... }``).

Requests wait in one queue per priority level, each under its queue policy (timeout, what a
timeout does, size limit). Workers cut batches from the front of the highest priority queues
with Triton's rule (:class:`~kernel._scheduling._batch_policy.BatchPolicy`): a batch goes once it
reaches a preferred size, cannot grow, or its oldest request waited the maximum queue delay.
Timeouts and cancellations are applied whenever a worker looks at the queues, as Triton does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest
from kernel._proto.inference import ModelConfig, ModelQueuePolicy, ModelQueuePolicyTimeoutAction
from kernel._scheduling._base import Scheduler
from kernel._scheduling._batch_policy import BatchPolicy
from kernel._scheduling._ordering import ResponseOrder
from kernel._scheduling._wakeup import Wakeup, now_ns, wait_for

__all__ = ["DynamicBatcher"]


def _log_prefix(request: InferenceRequest) -> str:
    return f"[request id: {request.id or '<id_unknown>'}] "


@dataclass(eq=False, slots=True)
class _Queued:
    request: InferenceRequest
    deadline_ns: int
    """When the request times out in the queue; 0 for never."""


@dataclass(eq=False, slots=True)
class _Level:
    """One priority level: its policy, its queue, and its timed-out-but-delayed requests."""

    policy: ModelQueuePolicy
    queue: deque[_Queued] = field(default_factory=deque)
    delayed: deque[_Queued] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.queue) + len(self.delayed)

    def timeout_ns(self, request: InferenceRequest) -> int:
        """The request's queue timeout: the policy's, or a shorter one the request asks for
        when ``allow_timeout_override`` is set (a request may shorten, never lengthen it)."""
        timeout_us = int(self.policy.default_timeout_microseconds)
        asked = request.timeout_us
        if self.policy.allow_timeout_override and asked > 0:
            timeout_us = asked if timeout_us == 0 else min(asked, timeout_us)
        return timeout_us * 1000

    def expire(self, now: int) -> list[InferenceRequest]:
        """Apply the policy to requests past their timeout; return the rejected and cancelled
        ones (the caller answers them). ``DELAY`` moves a request behind the level's others."""
        dropped: list[InferenceRequest] = []
        if not any(
            item.request.is_cancelled() or (item.deadline_ns and now > item.deadline_ns)
            for item in self.queue
        ) and not any(item.request.is_cancelled() for item in self.delayed):
            return dropped  # the common case: nothing to move, no copying
        kept: deque[_Queued] = deque()
        for item in self.queue:
            if item.request.is_cancelled():
                dropped.append(item.request)
            elif item.deadline_ns and now > item.deadline_ns:
                if self.policy.timeout_action == ModelQueuePolicyTimeoutAction.DELAY:
                    self.delayed.append(_Queued(item.request, 0))
                else:
                    dropped.append(item.request)
            else:
                kept.append(item)
        self.queue = kept
        cancelled = [item for item in self.delayed if item.request.is_cancelled()]
        if cancelled:
            self.delayed = deque(i for i in self.delayed if not i.request.is_cancelled())
            dropped.extend(item.request for item in cancelled)
        return dropped


class DynamicBatcher(Scheduler):
    """Batches requests of one model version across clients, by Triton's rules."""

    # An instance that runs its batches in order by itself (a Python model's process) gets
    # the next batch while one runs, as Triton's rate limiter queues one payload behind the
    # running one: it starts that batch as soon as the previous one is done, without waiting
    # for the loop to hear the answer and then wake it (bench/RESULTS.md, issue 22: the
    # large-input model at concurrency 4, +17-21%, with batches of ~1.45 instead of ~1.85).
    # A thread-fed instance (a framework) keeps one: its hand-off costs no wake-up of another
    # process, and a batch formed early is smaller (measured: compute-bound torch models lost).
    ordered_batches_ahead = 2

    def __init__(self, config: ModelConfig) -> None:
        settings = config.dynamic_batching
        if settings is None:
            raise ValueError("DynamicBatcher needs a config with dynamic_batching")
        self.model_name = config.name
        self.policy = BatchPolicy.from_config(
            config, settings.preferred_batch_size, settings.max_queue_delay_microseconds
        )
        self.priority_levels = settings.priority_levels
        self.default_level = settings.default_priority_level if settings.priority_levels else 0
        if self.priority_levels and not 1 <= self.default_level <= self.priority_levels:
            raise KernelError(
                Status.INVALID_ARG,
                f"model '{config.name}': dynamic_batching.default_priority_level must be in"
                f" [1, {self.priority_levels}], got {settings.default_priority_level}",
            )
        default_policy = settings.default_queue_policy or ModelQueuePolicy()
        levels = range(1, self.priority_levels + 1) if self.priority_levels else [0]
        self._levels = {
            level: _Level(settings.priority_queue_policy.get(level, default_policy))
            for level in levels
        }
        self._order = ResponseOrder() if settings.preserve_ordering else None
        self._wakeup = Wakeup()
        self._closed: KernelError | None = None

    def _level_of(self, request: InferenceRequest) -> _Level:
        """Triton's mapping: priority 0, or one past the configured levels, is the default."""
        priority = request.priority
        if priority < 1 or priority > self.priority_levels:
            priority = self.default_level
        return self._levels[priority]

    def enqueue(self, request: InferenceRequest) -> None:
        if self._closed is not None:
            raise self._closed
        level = self._level_of(request)
        limit = level.policy.max_queue_size
        if limit and len(level) >= limit:
            raise KernelError(
                Status.UNAVAILABLE, _log_prefix(request) + "Exceeds maximum queue size"
            )
        timeout = level.timeout_ns(request)
        level.queue.append(_Queued(request, now_ns() + timeout if timeout else 0))
        self._wakeup.notify()

    def _candidates(self) -> Iterator[InferenceRequest]:
        """Queued requests in scheduling order: by level (1 first), then queue, then delayed."""
        for level in self._levels.values():
            for item in level.queue:
                yield item.request
            for item in level.delayed:
                yield item.request

    def _take(self, count: int) -> list[InferenceRequest]:
        batch: list[InferenceRequest] = []
        for level in self._levels.values():
            for queue in (level.queue, level.delayed):
                while queue and len(batch) < count:
                    request = queue.popleft().request
                    if self._order is not None:
                        # As in Triton, the order kept is the order requests leave the queue
                        # in batches; rejected and cancelled requests are answered at once.
                        request.intercept_responses(self._order.track(request), holds=True)
                    batch.append(request)
        return batch

    def _expire(self, now: int) -> int | None:
        """Answer timed-out (``REJECT``) and cancelled requests; the next timeout deadline."""
        next_deadline: int | None = None
        for level in self._levels.values():
            for request in level.expire(now):
                if request.is_cancelled():
                    request.fail(KernelError(Status.CANCELLED, "request cancelled"))
                else:
                    request.fail(KernelError(Status.UNAVAILABLE, "Request timeout expired"))
            for item in level.queue:
                if item.deadline_ns and (next_deadline is None or item.deadline_ns < next_deadline):
                    next_deadline = item.deadline_ns
        return next_deadline

    async def next_batch(self, worker: int = 0) -> list[InferenceRequest]:
        while True:
            event = self._wakeup.arm()
            if self._closed is not None:
                await anyio.sleep_forever()  # closed: the worker waits to be cancelled
            now = now_ns()
            timeout_at = self._expire(now)
            candidates = list(self._candidates())
            count, delay_until = self.policy.decide(candidates, now)
            if count:
                return self._take(count)
            deadlines = [d for d in (delay_until, timeout_at) if d is not None]
            await wait_for(event, min(deadlines) if deadlines else None)

    def pending(self) -> int:
        return sum(len(level) for level in self._levels.values())

    def close(self, error: KernelError) -> list[InferenceRequest]:
        self._closed = error
        queued = list(self._candidates())
        for level in self._levels.values():
            level.queue.clear()
            level.delayed.clear()
        self._wakeup.notify()
        return queued
