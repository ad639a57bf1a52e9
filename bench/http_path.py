"""The HTTP inference path alone, without sockets or a client, measured in ways a loaded machine
does not move much: event-loop CPU time per request, or (``--callgrind``) instructions.

One server runs in this process (uvloop), serving bench/perf.py's Python add/sub model
in-process; one ``HttpConnection`` with a transport that records instead of sending is fed
perf_analyzer's own request bytes (captured from ``perf_analyzer -i http``), one request at a
time. Measured around ``--requests`` of them: the event loop thread's CPU time
(``time.thread_time``; the model's thread is not counted), and under ``--callgrind`` the user-space
instructions of the whole process (valgrind's callgrind, switched on for the measured requests
only: a count, not a time, so other jobs on the machine do not change it).

    python bench/http_path.py [--requests 20000] [--rounds 5] [--profile out.prof]
    python bench/http_path.py --tree before=/path/to/old/checkout --tree after=. \
        [--callgrind] [--rounds 3] [--requests 2000]

With ``--tree``, each tree runs in its own process (its ``kernel`` first on ``PYTHONPATH``),
interleaved, and the table gives medians and ratios to the first tree.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import _repository

from kernel.frontends._http._app import HttpApp
from kernel.frontends._http_server._connection import HttpConnection
from kernel.testing import run_server

_HEADER = (
    b'{"id":"","inputs":[{"name":"INPUT0","datatype":"FP32","shape":[4],"parameters":'
    b'{"binary_data_size":16}},{"name":"INPUT1","datatype":"FP32","shape":[4],"parameters":'
    b'{"binary_data_size":16}}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}'
    b',{"name":"OUTPUT1","parameters":{"binary_data":true}}]}'
)
_DATA = bytes(range(16)) * 2
REQUEST = (
    (
        b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        b"User-Agent: libcurl-agent/1.0\r\nAccept: */*\r\n"
        b"Inference-Header-Content-Length: %d\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(_HEADER), len(_HEADER) + len(_DATA))
    )
    + _HEADER
    + _DATA
)
"""What perf_analyzer 2.51 sends for bench/perf.py's add/sub model over HTTP (its inputs)."""


class _Transport:
    """Records the last write and wakes the driver."""

    def __init__(self) -> None:
        self.written: asyncio.Future[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self.written is not None and not self.written.done():
            self.written.set_result(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def _instructions(dump_dir: Path) -> int:
    """The instruction count of the last callgrind dump of this process."""
    dumps = sorted(dump_dir.glob(f"callgrind.out.{os.getpid()}.*"), key=os.path.getmtime)
    text = dumps[-1].read_text()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction count in {dumps[-1]}")
    return int(match.group(1))


async def _run(
    requests: int, rounds: int, profile: Path | None, callgrind: Path | None = None
) -> list[tuple[float, float]]:
    loop = asyncio.get_running_loop()
    results: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
        config = {"python": {"execution-mode": "in_process"}}
        async with run_server(repo, backend_config=config) as running:
            app = HttpApp(running.server)
            if "limits" in inspect.signature(HttpConnection).parameters:
                from kernel.frontends._http_server._types import HttpLimits

                connection = HttpConnection(app, HttpLimits(), set())
            else:  # a tree from before the HTTP/1.1 limits
                connection = HttpConnection(app, set())  # type: ignore[call-arg]
            transport = _Transport()
            connection.connection_made(transport)  # type: ignore[arg-type]

            async def one() -> bytes:
                transport.written = loop.create_future()
                connection.data_received(REQUEST)
                return await transport.written

            reply = await one()
            if not reply.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"unexpected reply: {reply[:200]!r}")
            for _ in range(min(2000, requests)):  # warm up
                await one()
            profiler = cProfile.Profile() if profile is not None else None
            for _ in range(rounds):
                if profiler is not None:
                    profiler.enable()
                if callgrind is not None:
                    _callgrind("--zero")
                    _callgrind("--instr=on")
                start = time.thread_time()
                for _ in range(requests):
                    await one()
                cpu = (time.thread_time() - start) / requests * 1e6
                count = 0.0
                if callgrind is not None:
                    _callgrind("--dump")
                    _callgrind("--instr=off")
                    count = _instructions(callgrind) / requests
                results.append((cpu, count))
                if profiler is not None:
                    profiler.disable()
            if profiler is not None and profile is not None:
                profiler.dump_stats(profile)
            connection.connection_lost(None)
    return results


def _trees(args: argparse.Namespace) -> None:
    """Run this script once per tree and round, interleaved; print the medians."""
    specs = [spec.partition("=")[::2] for spec in args.tree]
    counts: dict[str, list[float]] = {label: [] for label, _ in specs}
    cpus: dict[str, list[float]] = {label: [] for label, _ in specs}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for label, path in specs if n % 2 == 0 else specs[::-1]:
                tree = Path(path).resolve()
                env = dict(os.environ)
                paths = [str(tree), str(tree / "plugins" / "triton-backend-python" / "src")]
                env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
                command = [sys.executable, str(Path(__file__).resolve())]
                command += ["--requests", str(args.requests), "--rounds", "1"]
                if args.callgrind:
                    command = [
                        "valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={tmp}/callgrind.out.%p", *command,
                        "--callgrind-dir", tmp,
                    ]  # fmt: skip
                out = subprocess.run(
                    command, env=env, cwd=tree, check=True, capture_output=True, text=True
                ).stdout
                cpu, count = (float(x) for x in out.split("RESULT")[1].split()[:2])
                cpus[label].append(cpu)
                counts[label].append(count)
                print(f"round {n + 1} {label}: {cpu:.2f} us, {count:,.0f} instructions",
                      file=sys.stderr)  # fmt: skip
    first = specs[0][0]
    what = "instructions" if args.callgrind else "event-loop CPU us"
    print(f"per HTTP request, medians of {args.rounds} interleaved rounds of {args.requests}")
    print()
    print(f"| tree | {what} | ratio to {first} |")
    print("|---|---|---|")
    values = counts if args.callgrind else cpus
    base = statistics.median(values[first])
    for label, _ in specs:
        value = statistics.median(values[label])
        print(f"| {label} | {value:,.1f} | {value / base:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (--tree)")
    parser.add_argument("--callgrind-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tree:
        _trees(args)
        return
    results = uvloop.run(_run(args.requests, args.rounds, args.profile, args.callgrind_dir))
    cpus = [cpu for cpu, _ in results]
    print(" ".join(f"{r:.2f}" for r in cpus))
    print(f"event-loop CPU per request: median {statistics.median(cpus):.2f} us"
          f" (min {min(cpus):.2f}) over {args.rounds} rounds of {args.requests}")  # fmt: skip
    print("RESULT", statistics.median(cpus), statistics.median(c for _, c in results))


if __name__ == "__main__":
    main()
