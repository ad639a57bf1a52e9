"""How batching schedulers wake their waiting workers: on a queue change or at a deadline."""

from __future__ import annotations

import asyncio
import math
import time

import anyio
import anyio.lowlevel

__all__ = ["Wakeup", "now_ns", "wait_for"]


def now_ns() -> int:
    """The clock every scheduler deadline uses (the event loop's clock, in nanoseconds)."""
    return time.monotonic_ns()


class Wakeup:
    """A re-armable signal between ``enqueue`` (and finishing requests) and waiting workers.

    A worker calls :meth:`arm` *before* it looks at the queue and then waits on the event it got.
    Anything that changes the queue after the look calls :meth:`notify`, which sets that same
    event, so no change is missed; everything runs on one event loop, so there is no race
    between the look and the wait.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()

    def arm(self) -> anyio.Event:
        """The event the next :meth:`notify` sets (a fresh one once the last was set)."""
        if self._event.is_set():
            self._event = anyio.Event()
        return self._event

    def notify(self) -> None:
        """Wake every worker waiting on the armed event."""
        self._event.set()


async def wait_for(event: anyio.Event, deadline_ns: int | None) -> None:
    """Wait until ``event`` is set or the clock reaches ``deadline_ns`` (``None``: no deadline).

    The deadline sets ``event`` itself, so the other workers waiting on it look at the queue
    again too (and find nothing new). The timer is rounded up to a whole millisecond: uvloop's
    clock and timers tick in milliseconds, and a sub-millisecond deadline (a 500 us
    ``max_queue_delay_microseconds``) under ``anyio.move_on_after`` re-armed its timer on every
    loop turn until the tick, spinning the event loop for up to a millisecond per batch, which
    took the CPU from the transport and the model on a small machine. It may return a little
    before the deadline (uvloop's clock is its last millisecond tick): callers look at the
    queue again after any wake, and wait again for the rest.
    """
    if deadline_ns is None:
        await event.wait()
        return
    delay = (deadline_ns - now_ns()) / 1e9
    if delay <= 0:
        await anyio.lowlevel.checkpoint()
        return
    timer = asyncio.get_running_loop().call_later(math.ceil(delay * 1000) / 1000, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()
