"""Event-loop CPU per HTTP inference request, without sockets or a client: the HTTP/1.1 path
alone (reader, connection, REST app, decode, server admission, encode, reply assembly).

One server runs in this process (uvloop), serving bench/perf.py's Python add/sub model
in-process; one :class:`HttpConnection` with a transport that records instead of sending is fed
perf_analyzer's own request bytes (captured from ``perf_analyzer -i http``), one request at a
time, and the event loop thread's CPU time (``time.thread_time``) is read around ``--requests``
of them. The model's thread is not counted: what is left is what the HTTP path costs.

    python bench/http_path.py [--requests 20000] [--rounds 5] [--profile out.prof]

Only the current checkout (it drives the current connection API); to compare trees end to end
use ``bench/cpu_per_request.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import _repository

from kernel.frontends._http_types import HttpLimits
from kernel.frontends.http._app import HttpApp
from kernel.frontends.http._connection import HttpConnection
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


async def _run(requests: int, rounds: int, profile: Path | None) -> list[float]:
    loop = asyncio.get_running_loop()
    results: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp))
        config = {"python": {"execution-mode": "in_process"}}
        async with run_server(repo, backend_config=config) as running:
            app = HttpApp(running.server)
            connection = HttpConnection(app, HttpLimits(), set())
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
                start = time.thread_time()
                for _ in range(requests):
                    await one()
                results.append((time.thread_time() - start) / requests * 1e6)
                if profiler is not None:
                    profiler.disable()
            if profiler is not None and profile is not None:
                profiler.dump_stats(profile)
            connection.connection_lost(None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    results = uvloop.run(_run(args.requests, args.rounds, args.profile))
    print(" ".join(f"{r:.2f}" for r in results))
    print(f"event-loop CPU per request: median {statistics.median(results):.2f} us"
          f" (min {min(results):.2f}) over {args.rounds} rounds of {args.requests}")  # fmt: skip


if __name__ == "__main__":
    main()
