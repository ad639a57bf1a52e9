"""Instructions per call of each piece of the HTTP inference path, under valgrind's callgrind.

Where ``bench/http_path.py --callgrind`` counts the whole path, this counts its pieces one by
one, each ``--calls`` times (callgrind switched on around the calls only): the HTTP/1.1
reader on perf_analyzer's request bytes, decoding with and without a decode plan, routing
(``server.prepare``), encoding a binary and a JSON reply, and the connection's reply write.
Counts, not times: other jobs on the machine do not move them.

    valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file=/tmp/cg/callgrind.out.%p python bench/http_pieces.py /tmp/cg

Run it from another tree (its ``kernel`` first on ``PYTHONPATH``) for a before column.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_path import REQUEST, _Transport
from perf import _repository

from kernel.frontends._http import _infer
from kernel.frontends._http._app import HttpApp
from kernel.frontends._http_server._connection import HttpConnection
from kernel.frontends._http_server._reader import RequestReader
from kernel.frontends._http_server._types import HttpLimits
from kernel.testing import run_server

JSON_BODY = json.dumps(
    {
        "inputs": [
            {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": [1.0, 2.0, 3.0, 4.0]}
            for i in (0, 1)
        ],
        "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1"}],
    }
).encode()
"""The same add/sub request with its tensors in JSON."""


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


class _Counter:
    def __init__(self, dump_dir: Path, calls: int) -> None:
        self.dump_dir = dump_dir
        self.calls = calls

    def __call__(self, label: str, fn: Callable[[], Any]) -> None:
        for _ in range(50):
            fn()
        _control("--zero")
        _control("--instr=on")
        for _ in range(self.calls):
            fn()
        _control("--dump")
        _control("--instr=off")
        dumps = sorted(self.dump_dir.glob(f"callgrind.out.{os.getpid()}.*"), key=os.path.getmtime)
        text = dumps[-1].read_text()
        match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        assert match is not None, f"no instruction count in {dumps[-1]}"
        print(f"| {label} | {int(match.group(1)) / self.calls:,.0f} |", flush=True)


async def _run(measure: _Counter) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
        config = {"python": {"execution-mode": "in_process"}}
        async with run_server(repo, backend_config=config) as running:
            server = running.server
            app = HttpApp(server)
            reader = RequestReader(HttpLimits())
            print("| piece | instructions per call |\n|---|---|")
            measure("reader.feed (perf_analyzer's request)", lambda: reader.feed(REQUEST, 1.0))
            request = reader.feed(REQUEST, 1.0)[0].request  # type: ignore[union-attr]
            body = memoryview(request.body)
            length = int(request.headers["inference-header-content-length"])
            plans = app._plans
            measure(
                "decode_request, with a plan",
                lambda: _infer.decode_request(server, "add_sub", "", body, length, plans),
            )
            measure(
                "decode_request, without",
                lambda: _infer.decode_request(server, "add_sub", "", body, length, None),
            )
            measure("of which server.prepare", lambda: server.prepare("add_sub", ""))
            call = _infer.decode_request(server, "add_sub", "", body, length, plans)
            response = await server.infer_once(call.request, call.target)
            shm = server.shared_memory
            measure("encode_response, binary", lambda: _infer.encode_response(call, response, shm))
            json_body = memoryview(JSON_BODY)
            measure(
                "decode_request, JSON",
                lambda: _infer.decode_request(server, "add_sub", "", json_body, None, None),
            )
            json_call = _infer.decode_request(server, "add_sub", "", json_body, None, None)
            json_response = await server.infer_once(json_call.request, json_call.target)
            measure(
                "encode_response, JSON",
                lambda: _infer.encode_response(json_call, json_response, shm),
            )
            reply = await app.handle(request)
            connection = HttpConnection(app, HttpLimits(), set())
            connection.connection_made(_Transport())  # type: ignore[arg-type]
            measure("HttpConnection._write", lambda: connection._write(reply, False, False))  # type: ignore[arg-type]
            connection.connection_lost(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump_dir", type=Path, help="callgrind's --callgrind-out-file folder")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    uvloop.run(_run(_Counter(args.dump_dir, args.calls)))


if __name__ == "__main__":
    main()
