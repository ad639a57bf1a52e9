"""Triton's default scheduler: every request is its own batch, first come first served."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest
from kernel._scheduling._base import Scheduler


class DirectScheduler(Scheduler):
    """A FIFO queue; each worker takes the oldest request that is not cancelled.

    This is every unbatched model's hot path, so it is a deque and one future per idle worker
    rather than a general-purpose channel. A worker driven by callbacks (the ``Feeder`` of
    ``kernel._instance_worker``) takes with :meth:`take_or_wait` instead of :meth:`next_batch`:
    a request that finds it waiting reaches its instance within ``enqueue``, without a task
    switch.
    """

    # Every request is its own batch, so handing an instance several at once costs no batching;
    # it lets the instance run them back to back and report them together, which on the
    # benchmark machine nearly doubles what one instance serves (bench/RESULTS.md).
    batches_ahead = 8

    def __init__(self) -> None:
        self._queue: deque[InferenceRequest] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for a request
        self._takers: deque[Callable[[], None]] = deque()  # callback workers waiting
        self._closed: KernelError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the workers' (looked up once)

    def enqueue(self, request: InferenceRequest) -> None:
        if self._closed is not None:
            raise self._closed
        self._queue.append(request)
        if self._takers:
            self._takers.popleft()()
        else:
            self._wake_one()

    def take_or_wait(self, taker: Callable[[], None]) -> InferenceRequest | None:
        """The oldest queued request that is not cancelled (cancelled ones fail on the way):
        :meth:`next_batch` without the wait. With the queue empty, None, and ``taker`` is called
        (on the loop, from within :meth:`enqueue`) when the next request arrives, to take it.
        Once: a taker that wants more takes again."""
        queue = self._queue
        while queue:
            request = queue.popleft()
            if not request.is_cancelled():
                return request
            request.fail(KernelError(Status.CANCELLED, "request cancelled"))
        self._takers.append(taker)
        return None

    def withdraw(self, taker: Callable[[], None]) -> None:
        """Forget a taker waiting after :meth:`take_or_wait` (its worker stops)."""
        with contextlib.suppress(ValueError):
            self._takers.remove(taker)

    async def next_batch(self, worker: int = 0) -> list[InferenceRequest]:
        while True:
            while not self._queue:
                loop = self._loop
                if loop is None:  # CPython's lookup makes a getpid() system call each time
                    loop = self._loop = asyncio.get_running_loop()
                waiter = loop.create_future()
                self._idle.append(waiter)
                try:
                    await waiter  # after close, the worker waits here to be cancelled
                except BaseException:
                    # Woken and cancelled at once: pass the wake-up on to another worker.
                    if waiter.done() and not waiter.cancelled() and self._queue:
                        self._wake_one()
                    raise
            request = self._queue.popleft()
            if request.is_cancelled():
                request.fail(KernelError(Status.CANCELLED, "request cancelled"))
                continue
            return [request]

    def _wake_one(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def pending(self) -> int:
        return len(self._queue)

    def close(self, error: KernelError) -> list[InferenceRequest]:
        self._closed = error
        queued = list(self._queue)
        self._queue.clear()
        return queued
