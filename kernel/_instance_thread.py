"""A dedicated thread per model instance for backends whose ``execute`` is a plain ``def``.

An instance executes one batch at a time, so one long-lived thread per instance suffices, and
it is cheaper than a pool: the batch goes over a ``SimpleQueue`` and comes back with one
``call_soon_threadsafe``. Final answers given with ``request.respond`` during the batch ride on
that same wake-up instead of waking the event loop once per request (decoupled senders still
deliver at once, so streams keep streaming).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["InstanceThread"]

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", Callable[[Any], Any], Any]


class InstanceThread(threading.Thread):
    """Runs one instance's ``execute`` calls, one at a time, off the event loop."""

    def __init__(self, name: str) -> None:
        super().__init__(name=f"instance {name}", daemon=True)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.deferred: list[Callable[[], None]] | None = None
        """While a batch runs: deliveries to make on the loop when it returns (see module doc)."""

    def run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, fn, arg = job
            deferred: list[Callable[[], None]] = []
            self.deferred = deferred
            error: BaseException | None = None
            try:
                fn(arg)
            except BaseException as exc:  # handed to the awaiting task, which decides
                error = exc
            finally:
                self.deferred = None
            # A closed loop means nobody waits for this batch any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_finish, future, deferred, error)

    async def execute(self, fn: Callable[[Any], Any], arg: Any) -> None:
        """Run ``fn(arg)`` in this thread; cancellation waits for it to finish (it cannot be
        interrupted), as ``anyio.to_thread.run_sync`` does."""
        await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled worker starts no batch
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._jobs.put((loop, future, fn, arg))
        with anyio.CancelScope(shield=True):
            await future

    def stop(self) -> None:
        """Let the thread end after the batch it runs, if any."""
        self._jobs.put(None)


def _finish(
    future: asyncio.Future[None], deferred: list[Callable[[], None]], error: BaseException | None
) -> None:
    for deliver in deferred:
        deliver()
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
