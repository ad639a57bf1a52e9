"""Counting the rpcs and stream requests in progress, so a stop can let them finish."""

from __future__ import annotations

import anyio

from kernel._errors import KernelError, Status

__all__ = ["InFlight"]


class InFlight:
    """Work in progress on one endpoint; refuses new work once :meth:`drain` began."""

    def __init__(self) -> None:
        self.count = 0
        self.closing = False
        self.stopping = anyio.Event()
        """Set when :meth:`drain` began: open streams end once their own work is answered."""
        self._idle = anyio.Event()

    def enter(self, *, refuse: bool = True) -> None:
        """Count one more piece of work.

        :param refuse: refuse it once the endpoint is stopping; ``False`` for an rpc whose
            stream the transport accepted before its GOAWAY (the GOAWAY is the refusal).
        :raises KernelError: ``UNAVAILABLE`` once the endpoint is stopping.
        """
        if self.closing and refuse:
            raise KernelError(Status.UNAVAILABLE, "the server is shutting down")
        if self.count == 0 and self._idle.is_set():
            self._idle = anyio.Event()  # a later drain waits for this one too
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.closing and self.count == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Refuse new work and return once the work in progress finished."""
        self.closing = True
        self.stopping.set()
        if self.count:
            await self._idle.wait()
