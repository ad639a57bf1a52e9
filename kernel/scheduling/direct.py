"""Triton's default scheduler: every request is its own batch, first come first served."""

from __future__ import annotations

import asyncio
from collections import deque

from kernel.errors import KernelError, Status
from kernel.inference import InferenceRequest
from kernel.scheduling._base import Scheduler


class DirectScheduler(Scheduler):
    """A FIFO queue; each worker takes the oldest request that is not cancelled.

    This is every unbatched model's hot path, so it is a deque and one future per idle worker
    rather than a general-purpose channel.
    """

    # Every request is its own batch, so handing an instance several at once costs no batching;
    # it lets the instance run them back to back and report them together, which on the
    # benchmark machine nearly doubles what one instance serves (bench/RESULTS.md).
    batches_ahead = 8

    def __init__(self) -> None:
        self._queue: deque[InferenceRequest] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for a request
        self._closed: KernelError | None = None

    def enqueue(self, request: InferenceRequest) -> None:
        if self._closed is not None:
            raise self._closed
        self._queue.append(request)
        self._wake_one()

    async def next_batch(self, worker: int = 0) -> list[InferenceRequest]:
        while True:
            while not self._queue:
                waiter = asyncio.get_running_loop().create_future()
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
