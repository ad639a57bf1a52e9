"""What every scheduler offers the router (``enqueue``) and the workers (``next_batch``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest

__all__ = ["Scheduler"]

NOT_ITERATIVE = (
    "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE while the model is not"
    " configured with iterative sequence batching"
)


class Scheduler(ABC):
    """Queues requests of one model version and hands batches to its instance workers.

    All methods run on the event loop. ``next_batch`` is awaited by every worker concurrently;
    each request goes to exactly one batch.
    """

    overlapping: ClassVar[bool] = False
    """Whether a worker may start its next batch before the previous one finished. Only the
    ensemble scheduler sets it: its instance merely awaits other models, so serializing its
    batches would serialize every pipeline behind the slowest one."""

    batches_ahead: ClassVar[int] = 1
    """How many batches a worker may hand its instance before the first returned: to a
    plain-``def`` instance's thread (see ``kernel._instance_thread``), or as overlapping calls
    of an ``async def execute`` that allows them (``ModelInstance.overlapping_batches``). More
    than one only where forming a batch early loses nothing: a batching scheduler would form
    smaller batches (see :attr:`ordered_batches_ahead` for the exception)."""

    ordered_batches_ahead: ClassVar[int | None] = None
    """The same for an instance that runs the batches it holds one at a time in order by
    itself (``overlapping_batches`` above one: a model process, a device queue); None: as
    :attr:`batches_ahead`. Handing such an instance its next batch later costs a wake-up of
    what runs it; the dynamic batcher allows two there, as Triton's rate limiter, which queues
    one payload behind the running one."""

    @abstractmethod
    def enqueue(self, request: InferenceRequest) -> None:
        """Accept a request or raise :class:`KernelError` (queue full, closed, ...)."""

    @abstractmethod
    async def next_batch(self, worker: int = 0) -> list[InferenceRequest]:
        """Wait for and return the next batch (never empty) for instance worker ``worker``.

        ``worker`` is the index of the calling instance (0 .. instances - 1); schedulers that pin
        work to an instance (the sequence batcher's ``direct`` strategy) use it, others ignore
        it. A worker calls again only once it is ready for another batch.
        """

    def reschedule(self, request: InferenceRequest) -> None:
        """Take back a request its backend released with RESCHEDULE (see
        :meth:`InferenceRequest.reschedule`), to execute again in a later batch.

        :raises KernelError: when this scheduler does not reschedule (only the sequence
            batcher of an iterative sequence does, as in Triton).
        """
        raise KernelError(Status.INTERNAL, NOT_ITERATIVE)

    @abstractmethod
    def pending(self) -> int:
        """Requests accepted and not yet handed to a worker."""

    @abstractmethod
    def close(self, error: KernelError) -> list[InferenceRequest]:
        """Refuse new requests; return the queued ones (the caller fails them with ``error``)."""
