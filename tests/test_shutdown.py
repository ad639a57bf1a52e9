"""Graceful shutdown of a real ``kernel serve`` process on SIGTERM.

While a slow model works on requests from both protocols: the listening sockets close at once,
a new request on an open HTTP/1.1 keep-alive connection is answered 503 with
``Connection: close``, an open gRPC connection receives GOAWAY, the requests in flight finish
with their answers, and the process exits 0.
"""

from __future__ import annotations

import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from kernel_test_backends.configs import sleeping

from kernel.testing import write_model

KERNEL = [sys.executable, "-m", "kernel"]
SLEEP_MS = 1500
CONFIG = sleeping(SLEEP_MS, instances=1)
GOAWAY = 7


class Served:
    """A ``kernel serve`` subprocess and the ports it reported."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(
            [
                *KERNEL,
                "serve",
                f"--model-repository={repo}",
                "--host=127.0.0.1",
                "--http-port=0",
                "--grpc-port=0",
                "--metrics-port=0",
                "--exit-timeout-secs=30",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ports: dict[str, int] = {}
        self.log: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + 60
        while len(self.ports) < 3 or not any(x.startswith("| sleepy") for x in self.log):
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, "kernel serve exited:\n" + "".join(self.log)
            found = re.search(r"started (\w+) endpoint at [\d.]+:(\d+)", line)
            if found:
                self.ports[found[1]] = int(found[2])

    def _read(self, lines: queue.Queue[str | None]) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            lines.put(line)
        lines.put(None)

    def url(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def pending(self) -> int:
        """``nv_inference_pending_request_count`` of the model: accepted, not yet executing."""
        with urllib.request.urlopen(f"http://{self.url('metrics')}/metrics", timeout=10) as r:
            text = r.read().decode()
        found = re.search(r'nv_inference_pending_request_count\{model="sleepy".*\} (\d+)', text)
        return int(found[1]) if found else 0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    write_model(tmp_path, "sleepy", CONFIG)
    running = Served(tmp_path)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.wait(timeout=30)
        assert running.proc.stderr is not None
        running.proc.stderr.close()


def read_http_response(sock: socket.socket) -> bytes:
    """One response on a keep-alive connection (headers and ``Content-Length`` body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head + b"\r\n\r\n" + body


def open_http2(port: int) -> socket.socket:
    """A raw HTTP/2 connection that has exchanged SETTINGS, ready to watch for GOAWAY."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    return sock


def http2_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each frame the server sends, until it closes."""
    data = b""
    while True:
        while len(data) >= 9:
            length = int.from_bytes(data[:3], "big")
            if len(data) < 9 + length:
                break
            yield data[3], data[9 : 9 + length]
            data = data[9 + length :]
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_in_flight_work_and_refuses_new_work(served: Served) -> None:
    values = np.arange(3, dtype=np.float32)
    http_input = httpclient.InferInput("INPUT0", [3], "FP32")
    http_input.set_data_from_numpy(values)
    grpc_input = grpcclient.InferInput("INPUT0", [3], "FP32")
    grpc_input.set_data_from_numpy(values)

    def infer_http() -> np.ndarray:
        with httpclient.InferenceServerClient(served.url("http"), network_timeout=60) as c:
            result = c.infer("sleepy", [http_input])
            return result.as_numpy("OUTPUT0")  # type: ignore[no-any-return]

    def infer_grpc() -> np.ndarray:
        with grpcclient.InferenceServerClient(served.url("grpc")) as c:
            result = c.infer("sleepy", [grpc_input], client_timeout=60)
            return result.as_numpy("OUTPUT0")  # type: ignore[no-any-return]

    idle = socket.create_connection(("127.0.0.1", served.ports["http"]), timeout=30)
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_http_response(idle).startswith(b"HTTP/1.1 200")
    h2 = open_http2(served.ports["grpc"])
    with ThreadPoolExecutor(3) as pool:
        # one instance: one request executes, two wait behind it
        calls: list[Future[np.ndarray]] = [pool.submit(infer_http), pool.submit(infer_grpc)]
        calls.append(pool.submit(infer_http))
        wait_for(lambda: served.pending() == 2, "three requests in the server")
        served.proc.send_signal(signal.SIGTERM)

        wait_for(lambda: refused(served.ports["http"]), "the HTTP socket to close", 10)
        wait_for(lambda: refused(served.ports["grpc"]), "the gRPC socket to close", 10)
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_http_response(idle)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"connection: close" in answer.lower()
        assert idle.recv(1) == b""
        goaway = next(payload for kind, payload in http2_frames(h2) if kind == GOAWAY)
        assert struct.unpack(">LL", goaway[:8])[1] == 0  # NO_ERROR
        assert not all(c.done() for c in calls)  # all of this happened while they ran
        for call in calls:
            np.testing.assert_array_equal(call.result(timeout=60), values)
    assert served.proc.wait(timeout=60) == 0
    idle.close()
    h2.close()
