"""Who reads the model process's connection: the thread that waits for a message.

A dedicated reader thread that hands every message to the thread running the model costs a
wake-up and a GIL hand-off per request (measured: most of a process round trip's cost on a
loaded 2-core machine). Here the thread that waits reads: the model's main thread reads the
next command itself when it is idle, a thread blocked in ``exec()`` or an ``rpc`` reads until
its answer is there, and each message it reads for another thread is handed to that thread.
One thread reads at a time (the leader); the others wait on a condition until their message
came or the reading role is free.

A helper thread takes the role only when messages are awaited by no thread that can read
(``async_exec`` on the model's event loop, a coroutine hook waited for by the main thread): it
reads while :meth:`Inbox.outstanding` says something is awaited, then hands the role back.
It also watches that the server (the parent process) is alive, once a second, as Triton's stub
does, since with no reader nobody would see the connection close.

No kernel import: this runs in model processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Inbox"]

PARENT_CHECK_SECONDS = 1.0


class Inbox:
    """Reads messages with ``read`` (blocking) and hands each to ``dispatch``."""

    def __init__(
        self,
        read: Callable[[], Any],
        dispatch: Callable[[Any], None],
        outstanding: Callable[[], bool],
    ) -> None:
        self._read = read
        self._dispatch = dispatch
        self.outstanding = outstanding
        """Whether some message is awaited by a thread that cannot read (async waiters)."""
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        """Threads waiting for a message or for the reading role."""
        self._helper_cond = threading.Condition(lock)
        """The helper, apart: a notify per message must not wake it (a wake-up per request)."""
        self._reading = False
        self._parent = os.getppid()

    def start_helper(self) -> None:
        threading.Thread(target=self._helper, name="triton-stub-reader", daemon=True).start()

    def _read_one(self) -> None:
        message = self._read()
        if message is None:
            os._exit(0)  # the server is gone: nothing left to serve
        self._dispatch(message)
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` is true, reading messages meanwhile when nobody else does."""
        with self._cond:
            while not done():
                if not self._reading:
                    self._reading = True
                    break
                self._cond.wait()
            else:
                return
        try:
            while not done():
                self._read_one()
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._reading = False
            self._cond.notify_all()
            if self.outstanding():
                self._helper_cond.notify()

    def wake(self) -> None:
        """Something is now awaited by a thread that cannot read: let the helper check."""
        with self._cond:
            self._helper_cond.notify()

    def _helper(self) -> None:
        while True:
            with self._cond:
                while self._reading or not self.outstanding():
                    self._helper_cond.wait(PARENT_CHECK_SECONDS)
                    if os.getppid() != self._parent:
                        os._exit(0)  # the server died without closing the connection
                self._reading = True
            try:
                while self.outstanding():
                    self._read_one()
            finally:
                self._release()
