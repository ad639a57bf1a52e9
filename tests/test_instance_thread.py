"""``kernel._instance_thread.defer``: from an instance thread running a batch, a delivery waits
for the batch's completion and runs on the event loop just before its ``done``; from any other
thread it is refused, and the caller delivers itself."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio

from kernel._instance_thread import InstanceThread, defer


def _record(events: list[tuple[str, Any]], what: str) -> Any:
    return lambda arg: events.append((what, arg))


async def test_defer_is_refused_outside_an_instance_thread() -> None:
    events: list[tuple[str, Any]] = []
    assert not defer(_record(events, "loop"), 1)  # the event loop's thread
    answers: list[bool] = []
    other = threading.Thread(target=lambda: answers.append(defer(_record(events, "other"), 2)))
    other.start()
    other.join(timeout=10)
    assert answers == [False]
    await asyncio.sleep(0)
    assert events == []  # nothing was queued anywhere


async def test_deliveries_deferred_by_a_batch_run_on_the_loop_before_its_done() -> None:
    loop_thread = threading.get_ident()
    events: list[tuple[str, Any]] = []
    finished = anyio.Event()
    thread = InstanceThread("t")
    thread.start()
    try:

        def batch(values: list[int]) -> str:
            for value in values:
                assert defer(
                    lambda arg: events.append(("deliver", arg, threading.get_ident())), value
                )
            events.append(("returned", None, threading.get_ident()))
            return "result"

        def done(
            values: list[int], result: Any, error: BaseException | None, start: int, end: int
        ) -> None:
            events.append(("done", result, threading.get_ident()))
            finished.set()

        await thread.reserve()
        thread.submit(batch, [1, 2], done)
        with anyio.fail_after(10):
            await finished.wait()
        worker = events[0][2]
        assert worker != loop_thread
        assert events == [
            ("returned", None, worker),  # nothing delivered while the batch ran
            ("deliver", 1, loop_thread),
            ("deliver", 2, loop_thread),
            ("done", "result", loop_thread),
        ]
        # the next batch delivers its own deliveries only
        events.clear()
        finished = anyio.Event()
        await thread.reserve()
        thread.submit(batch, [3], done)
        with anyio.fail_after(10):
            await finished.wait()
        assert [e[:2] for e in events] == [("returned", None), ("deliver", 3), ("done", "result")]
    finally:
        thread.stop()
        with anyio.fail_after(10):
            await thread.wait_idle()
