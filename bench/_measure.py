"""How the in-process path benches (bench/http_path.py, grpc_path.py, request_path.py) measure
one request at a time: the event loop thread's CPU time per request (``time.thread_time``: other
threads and processes are not counted) and, under valgrind, callgrind's instruction count per
request, switched on for the measured requests only. Both are figures a loaded machine hardly
moves, unlike a wall-clock rate; they are taken in one loop so the benches agree on what a round
is.

With ``--tree``, bench/_trees.py runs the script once per checkout and reads its ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop
from _trees import compare


def callgrind_control(*args: str) -> None:
    """``callgrind_control ARGS`` for this process (which must run under valgrind)."""
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def instructions(dump_dir: Path) -> int:
    """The instruction count of the last callgrind dump of this process."""
    dumps = sorted(dump_dir.glob(f"callgrind.out.{os.getpid()}.*"), key=os.path.getmtime)
    text = dumps[-1].read_text()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction count in {dumps[-1]}")
    return int(match.group(1))


async def measure(
    one: Callable[[], Awaitable[object]],
    requests: int,
    rounds: int,
    *,
    warmup: int,
    profile: Path | None = None,
    callgrind: Path | None = None,
) -> list[tuple[float, float]]:
    """``warmup`` awaits of ``one``, then ``rounds`` rounds of ``requests``; per round, (event-loop
    CPU us per request, instructions per request: 0 without ``callgrind``, the folder of its
    dumps). With ``profile``, the rounds (not the warm-up) run under cProfile, written there."""
    for _ in range(warmup):
        await one()
    profiler = cProfile.Profile() if profile is not None else None
    results: list[tuple[float, float]] = []
    for _ in range(rounds):
        if profiler is not None:
            profiler.enable()
        if callgrind is not None:
            callgrind_control("--zero")
            callgrind_control("--instr=on")
        start = time.thread_time()
        for _ in range(requests):
            await one()
        cpu = (time.thread_time() - start) / requests * 1e6
        count = 0.0
        if callgrind is not None:
            callgrind_control("--dump")
            callgrind_control("--instr=off")
            count = instructions(callgrind) / requests
        results.append((cpu, count))
        if profiler is not None:
            profiler.disable()
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    return results


def add_arguments(parser: argparse.ArgumentParser, requests: int, rounds: int) -> None:
    """The options every path bench takes (``--callgrind-dir`` is how ``--tree`` runs pass the
    dump folder to the script under valgrind)."""
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (--tree)")
    parser.add_argument("--callgrind-dir", type=Path, default=None, help=argparse.SUPPRESS)


def print_rounds(results: list[tuple[float, float]], rounds: int, requests: int) -> None:
    """One run's rounds, their median, and the ``RESULT`` line bench/_trees.py reads."""
    cpus = [cpu for cpu, _ in results]
    print(" ".join(f"{r:.2f}" for r in cpus))
    print(f"event-loop CPU per request: median {statistics.median(cpus):.2f} us"
          f" (min {min(cpus):.2f}) over {rounds} rounds of {requests}")  # fmt: skip
    print("RESULT", statistics.median(cpus), statistics.median(c for _, c in results))


Run = Callable[[int, int, Path | None, Path | None], Coroutine[Any, Any, list[tuple[float, float]]]]
"""``run(requests, rounds, profile, callgrind_dir)``: a bench's rounds in one event loop."""


def main(description: str, per: str, run: Run) -> None:
    """The command line of a one-model path bench: its rounds (``--requests``, ``--rounds``,
    ``--profile FILE``) or, with ``--tree``, the comparison of checkouts; ``per`` names what a
    figure is per (``per HTTP request``)."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser, requests=20000, rounds=5)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    if args.tree:
        compare(args, per)
        return
    results = uvloop.run(run(args.requests, args.rounds, args.profile, args.callgrind_dir))
    print_rounds(results, args.rounds, args.requests)
