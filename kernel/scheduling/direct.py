"""Triton's default scheduler: every request is its own batch, first come first served."""

from __future__ import annotations

import math

import anyio

from kernel.errors import KernelError, Status
from kernel.inference import InferenceRequest
from kernel.scheduling._base import Scheduler


class DirectScheduler(Scheduler):
    """A FIFO queue; each worker takes the oldest request that is not cancelled."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[InferenceRequest](math.inf)
        self._closed: KernelError | None = None

    def enqueue(self, request: InferenceRequest) -> None:
        if self._closed is not None:
            raise self._closed
        self._send.send_nowait(request)

    async def next_batch(self, worker: int = 0) -> list[InferenceRequest]:
        while True:
            try:
                request = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                await anyio.sleep_forever()  # closed: the worker waits to be cancelled
            if request.is_cancelled():
                request.fail(KernelError(Status.CANCELLED, "request cancelled"))
                continue
            return [request]

    def pending(self) -> int:
        return self._send.statistics().current_buffer_used

    def close(self, error: KernelError) -> list[InferenceRequest]:
        self._closed = error
        queued: list[InferenceRequest] = []
        while True:
            try:
                queued.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._send.close()
        self._receive.close()
        return queued
