"""The HTTP/1.1 rules over real loopback sockets, against the REST app and the metrics endpoint.

The byte-level tests of each rule are in ``test_http_connection.py``; these check that the
server wires them up: limits from the options, HEAD and ``Allow`` on real routes, a chunked and
gzip-encoded infer body, and a malformed request behind a good one.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_test_backends.configs import ADDSUB

from kernel.testing import RunningServer, ServerThread, write_model

INFER_BODY = json.dumps(
    {
        "inputs": [
            {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
            for i in (0, 1)
        ]
    }
).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("models")
    write_model(repository, "addsub", ADDSUB)
    with ServerThread(
        repository,
        grpc_port=None,
        http_max_url_bytes=1024,
        http_max_header_bytes=4096,
        http_header_timeout_secs=0.3,
    ) as running:
        yield running


def exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes."""
    host, port = url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def statuses(data: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", data)


def allow_of(url: str, method: str, path: str) -> bytes:
    data = exchange(url, f"{method} {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    assert statuses(data) == [b"405"]
    found = re.search(rb"\r\nallow: ([^\r]*)\r\n", data)
    assert found is not None
    return found[1]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/addsub/infer", b"POST"),
        ("POST", "/v2/health/live", b"GET, HEAD"),
        ("POST", "/v2/models/addsub/config", b"GET, HEAD"),
        ("GET", "/v2/repository/index", b"POST"),
        ("DELETE", "/v2/logging", b"GET, HEAD, POST"),
        ("POST", "/v2/systemsharedmemory/status", b"GET, HEAD"),
    ],
)
def test_405_names_the_allowed_methods(
    server: RunningServer, method: str, path: str, allow: bytes
) -> None:
    assert allow_of(server.http_url, method, path) == allow


def test_metrics_405_names_get(server: RunningServer) -> None:
    assert allow_of(server.metrics_url, "POST", "/metrics") == b"GET, HEAD"


def test_head_has_the_headers_of_get_and_no_body(server: RunningServer) -> None:
    data = exchange(
        server.http_url,
        b"HEAD /v2/models/addsub/config HTTP/1.1\r\n\r\n"
        b"GET /v2/models/addsub/config HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    head_answer, _, rest = data.partition(b"\r\n\r\n")
    get_answer, _, body = rest.partition(b"\r\n\r\n")
    assert head_answer.startswith(b"HTTP/1.1 200")
    assert head_answer + b"\r\nconnection: close" == get_answer
    length = re.search(rb"content-length: (\d+)", head_answer)
    assert length is not None and int(length[1]) == len(body) > 0
    assert json.loads(body)["name"] == "addsub"


def test_chunked_gzip_body_is_dechunked_then_inflated(server: RunningServer) -> None:
    packed = gzip.compress(INFER_BODY)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(packed[i : i + 7]), packed[i : i + 7])
        for i in range(0, len(packed), 7)
    )
    data = exchange(
        server.http_url,
        b"POST /v2/models/addsub/infer HTTP/1.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert statuses(data) == [b"200"]
    outputs = json.loads(data.partition(b"\r\n\r\n")[2])["outputs"]
    assert outputs[0]["data"] == [2.0, 4.0, 6.0, 8.0]


def test_good_request_before_a_malformed_one_is_answered(server: RunningServer) -> None:
    data = exchange(
        server.http_url,
        b"POST /v2/models/addsub/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
        b"POST /v2/models/addsub/infer HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        % (len(INFER_BODY), INFER_BODY),
    )
    assert statuses(data) == [b"200", b"400"]
    assert b'"OUTPUT0"' in data
    assert data.count(b"connection: close") == 1


def test_limits_come_from_the_options(server: RunningServer) -> None:
    url = server.http_url
    long_target = exchange(url, b"GET /v2/" + b"x" * 1024 + b" HTTP/1.1\r\n\r\n")
    assert statuses(long_target) == [b"414"]
    big_head = exchange(url, b"GET /v2 HTTP/1.1\r\nX-A: " + b"v" * 4096 + b"\r\n\r\n")
    assert statuses(big_head) == [b"431"]
    answer = exchange(url, b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [b"200"]


def test_dribbling_client_is_answered_408_and_closed(server: RunningServer) -> None:
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        received = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"X")  # one byte of a header field, now and then
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
    assert statuses(received) == [b"408"]


def test_idle_connection_is_closed_by_the_server(tmp_path: Path) -> None:
    write_model(tmp_path, "addsub", ADDSUB)
    with ServerThread(
        tmp_path, grpc_port=None, metrics_port=None, http_idle_timeout_secs=0.2
    ) as running:
        host, port = running.http_url.split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):  # ends when the server closes the idle connection
                received += chunk
        assert statuses(received) == [b"200"]


def test_limit_flags_reach_the_limits() -> None:
    from kernel._cli import build_parser
    from kernel._serve_command import options_from_args
    from kernel.frontends._http_server._types import HttpLimits

    args = build_parser().parse_args(
        [
            "serve",
            "--http-max-input-size=1000",
            "--http-max-url-size=100",
            "--http-max-header-size=2000",
            "--http-max-header-count=7",
            "--http-header-timeout-secs=1.5",
            "--http-idle-timeout-secs=9",
        ]
    )
    limits = HttpLimits.from_options(options_from_args(args))
    assert limits == HttpLimits(1000, 100, 2000, 7, 1.5, 9.0)
    defaults = HttpLimits.from_options(options_from_args(build_parser().parse_args(["serve"])))
    assert defaults == HttpLimits()
