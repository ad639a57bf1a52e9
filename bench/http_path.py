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

import asyncio
import inspect
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import main, measure
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


async def _run(
    requests: int, rounds: int, profile: Path | None, callgrind: Path | None = None
) -> list[tuple[float, float]]:
    loop = asyncio.get_running_loop()
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
            warmup = min(2000, requests)
            results = await measure(
                one, requests, rounds, warmup=warmup, profile=profile, callgrind=callgrind
            )
            connection.connection_lost(None)
    return results


if __name__ == "__main__":
    main(__doc__.splitlines()[0], "per HTTP request", _run)
