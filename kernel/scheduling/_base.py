"""What every scheduler offers the router (``enqueue``) and the workers (``next_batch``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from kernel.errors import KernelError
from kernel.inference import InferenceRequest


class Scheduler(ABC):
    """Queues requests of one model version and hands batches to its instance workers.

    All methods run on the event loop. ``next_batch`` is awaited by every worker concurrently;
    each request goes to exactly one batch.
    """

    @abstractmethod
    def enqueue(self, request: InferenceRequest) -> None:
        """Accept a request or raise :class:`KernelError` (queue full, closed, ...)."""

    @abstractmethod
    async def next_batch(self) -> list[InferenceRequest]:
        """Wait for and return the next batch (never empty)."""

    @abstractmethod
    def pending(self) -> int:
        """Requests accepted and not yet handed to a worker."""

    @abstractmethod
    def close(self, error: KernelError) -> list[InferenceRequest]:
        """Refuse new requests; return the queued ones (the caller fails them with ``error``)."""
