"""How batching workers wait for a queue delay: they sleep until the deadline instead of
spinning the event loop, on uvloop (whose timers tick in milliseconds) as on asyncio's loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
import uvloop

from kernel._scheduling._wakeup import Wakeup, now_ns, wait_for

ROUNDS = 40
DELAY_NS = 300_000  # below uvloop's millisecond tick, like a 300 us max_queue_delay


def _run(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_kind == "uvloop":
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(main())


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_short_deadlines_sleep_instead_of_spinning(loop_kind: str) -> None:
    """The old wait (anyio.move_on_after) re-armed its timer on every loop turn under uvloop
    until the millisecond ticked: a 300 us deadline cost about as much CPU as wall time."""
    late: list[int] = []
    wakes: list[int] = []
    cpu = wall = 0.0

    async def main() -> None:
        nonlocal cpu, wall
        wakeup = Wakeup()
        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        for _ in range(ROUNDS):
            deadline = now_ns() + DELAY_NS
            count = 0
            while now_ns() < deadline:  # as the batchers do: look again after each wake
                await wait_for(wakeup.arm(), deadline)
                count += 1
            wakes.append(count)
            late.append(now_ns() - deadline)
        cpu = time.thread_time() - cpu_start
        wall = time.perf_counter() - wall_start

    _run(loop_kind, main)
    # uvloop's clock is the last millisecond tick, so a timer may fire a little early: the
    # worker then waits once more, for the rest, never for long.
    assert max(wakes) <= 3, wakes
    # Spinning burns about as much CPU as the time waited (0.4 of it here on a loaded machine);
    # a sleeping wait a small fraction (0.03).
    # (A loaded machine only lowers CPU against wall time.)
    assert cpu < 0.2 * wall, f"{cpu * 1e3:.1f} ms of CPU in {wall * 1e3:.1f} ms of waiting"


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_notify_ends_the_wait_before_the_deadline(loop_kind: str) -> None:
    woke: list[int] = []

    async def main() -> None:
        wakeup = Wakeup()
        event = wakeup.arm()
        deadline = now_ns() + 60 * 10**9
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    await wait_for(event, deadline)
                    woke.append(now_ns())

                tg.start_soon(waiter)
                await anyio.sleep(0.01)
                wakeup.notify()
        assert woke and woke[0] < deadline

    _run(loop_kind, main)
