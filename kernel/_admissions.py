"""What a model version has accepted and not finished: the requests it admitted and has not
settled, and the batches its instances execute. An unload waits on it before it finalizes.

The server admits a request once the version's scheduler took it and settles it once its client
is done with it: the final response was handed out, or the client went away first. Instance
workers (``kernel._instance_worker``) count the batches they hand an instance. Settling is once
per request whatever the path (a second :meth:`Admissions.settle` is a no-op), so the count
cannot drift; :meth:`Admissions.drained` waits on an event set by the change that leaves nothing
admitted and nothing executing.
"""

from __future__ import annotations

import anyio

from kernel._inference import InferenceRequest

__all__ = ["Admissions"]


class Admissions:
    """The admitted requests and executing batches of one model version (on its event loop)."""

    __slots__ = ("_idle", "executing", "requests")

    def __init__(self) -> None:
        self.requests = 0
        """Requests admitted and not settled yet."""
        self.executing = 0
        """Batches handed to an instance that have not returned yet: a worker adds one as it
        hands a batch over (a plain increment, once per batch on the hot path: nothing waits
        for a count going up) and calls :meth:`batch_ended` once the batch returned."""
        self._idle: anyio.Event | None = None
        """Only while :meth:`drained` waits: set when the counts reach zero."""

    def admit(self, request: InferenceRequest) -> None:
        """Count ``request``, which the version's scheduler (or response cache) just took."""
        request._admitted = True
        self.requests += 1

    def settle(self, request: InferenceRequest) -> bool:
        """Stop counting ``request``: its final response was handed out, or its client left.
        ``False`` (and nothing changes) when it was not admitted or is settled already."""
        if not request._admitted:
            return False
        request._admitted = False
        self.requests -= 1
        if self._idle is not None and not self.requests and not self.executing:
            self._idle.set()
        return True

    def batch_ended(self) -> None:
        """A batch handed to an instance returned (or failed)."""
        self.executing -= 1
        if self._idle is not None and not self.executing and not self.requests:
            self._idle.set()

    @property
    def idle(self) -> bool:
        """Nothing admitted and unsettled, no batch executing."""
        return not self.requests and not self.executing

    async def drained(self) -> None:
        """Return once nothing is admitted and unsettled and no batch executes (at once when
        that holds already). Bound it with a timeout: a model may never answer."""
        while self.requests or self.executing:
            idle = self._idle
            if idle is None or idle.is_set():
                idle = self._idle = anyio.Event()
            try:
                await idle.wait()
            finally:
                if self._idle is idle:
                    self._idle = None
