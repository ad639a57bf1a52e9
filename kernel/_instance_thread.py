"""A dedicated thread per model instance for backends whose ``execute`` is a plain ``def``.

An instance executes one batch at a time, so one long-lived thread per instance suffices, and
it is cheaper than a pool: a batch goes over a ``SimpleQueue`` and its completion comes back with
one ``call_soon_threadsafe``. Final answers given with ``request.respond`` during the batch ride
on that same wake-up instead of waking the event loop once per request (decoupled senders still
deliver at once, so streams keep streaming): the request asks :func:`defer`, which knows whether
the calling thread is an instance thread running a batch.

The thread may hold more than one batch (``depth``): with batches already queued, it starts
the next as soon as one returns instead of idling until the event loop has noticed the
completion and handed over another, and the completions of batches that finish while the loop
is busy reach it in one wake-up. Batches still run one at a time and in the order they were
submitted; :attr:`InstanceThread.queued` counts those not started yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BatchDone", "InstanceThread", "defer"]

BatchDone = Callable[[Any, Any, BaseException | None, int, int], None]
"""Called on the event loop when a batch returned: ``(arg, result, error, start_ns, end_ns)``,
``arg`` being what was submitted (no closure per batch to remember it)."""

_Job = tuple[asyncio.AbstractEventLoop, Callable[[Any], Any], Any, BatchDone]
_Deferred = list[tuple[Callable[[Any], object], Any]]


class _Running(threading.local):
    """Per thread: the deliveries deferred by the batch the thread is running, if it is an
    instance thread running one (a thread-local's class default costs no exception to read)."""

    deferred: _Deferred | None = None


_running = _Running()


def defer(deliver: Callable[[Any], object], arg: Any) -> bool:
    """From an instance thread running a batch: queue ``deliver(arg)`` to run on the event loop
    with the batch's completion (one wake-up for the batch) and return ``True``. From any other
    thread: do nothing and return ``False`` (the caller delivers itself)."""
    deferred = _running.deferred
    if deferred is None:
        return False
    deferred.append((deliver, arg))
    return True


class InstanceThread(threading.Thread):
    """Runs one instance's ``execute`` calls, one at a time and in order, off the event loop."""

    def __init__(self, name: str, *, depth: int = 1) -> None:
        super().__init__(name=f"instance {name}", daemon=True)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(depth)
        self._outstanding = 0
        self._submitted = 0  # written on the loop only
        self._taken = 0  # written in the thread only
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop submitting (one)
        self.on_free: Callable[[], None] | None = None
        """For a feeder that counts the slots itself (no :meth:`reserve`): called on the loop
        each time a batch returned and its ``done`` ran, instead of freeing a reservation."""

    def run(self) -> None:
        running = _running
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fn, arg, done = job
            self._taken += 1
            deferred: _Deferred = []
            running.deferred = deferred  # what :func:`defer` appends to while the batch runs
            result: Any = None
            error: BaseException | None = None
            start = time.monotonic_ns()
            try:
                result = fn(arg)
            except BaseException as exc:  # handed to ``done``, which decides
                error = exc
            finally:
                running.deferred = None
            end = time.monotonic_ns()
            # A closed loop means nobody waits for this batch any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    self._finish, deferred, done, arg, result, error, start, end
                )

    async def reserve(self) -> None:
        """Wait until the thread can take another batch; :meth:`submit` or :meth:`release`
        must follow."""
        await self._slots.acquire()

    def release(self) -> None:
        """Give back a reservation that no batch used."""
        self._slots.release()

    def submit(self, fn: Callable[[Any], Any], arg: Any, done: BatchDone) -> None:
        """Queue ``fn(arg)`` under a reservation; ``done`` runs on this event loop afterwards,
        with ``arg`` and what ``fn`` returned or raised."""
        self._outstanding += 1
        self._submitted += 1
        self._idle.clear()
        loop = self._loop
        if loop is None:  # looked up once: CPython's lookup makes a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        self._jobs.put((loop, fn, arg, done))

    @property
    def queued(self) -> int:
        """Batches submitted that the thread has not started yet."""
        return self._submitted - self._taken

    async def wait_idle(self) -> None:
        """Wait until every submitted batch returned and its ``done`` ran."""
        await self._idle.wait()

    def stop(self) -> None:
        """Let the thread end after the batches it holds."""
        self._jobs.put(None)

    def _finish(
        self,
        deferred: _Deferred,
        done: BatchDone,
        arg: Any,
        result: Any,
        error: BaseException | None,
        start: int,
        end: int,
    ) -> None:
        try:
            for deliver, value in deferred:
                deliver(value)
            done(arg, result, error, start, end)
        finally:
            self._outstanding -= 1
            if not self._outstanding:
                self._idle.set()
            if self.on_free is None:
                self._slots.release()
            else:
                self.on_free()
