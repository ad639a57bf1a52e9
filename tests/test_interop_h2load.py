"""The gRPC port under nghttp2's ``h2load`` (Debian package ``nghttp2-client``): real gRPC unary
calls (a length-prefixed protobuf body, ``content-type: application/grpc``, ``te: trailers``),
many streams on many connections, over cleartext HTTP/2 and over TLS; nghttp's priority frames;
and the HTTPS endpoint under h2load's HTTP/1.1 mode.

h2load judges HTTP, not gRPC: it counts a request succeeded on a 2xx ``:status``. That each call
also succeeded at the gRPC level is checked from the server's model statistics (every request
counted once, as a success) and from the response bytes (every reply the expected message).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from kernel_test_backends.configs import IDENTITY
from tritonclient.grpc import service_pb2, service_pb2_grpc

from kernel._options import TlsSettings
from kernel.testing import RunningServer, ServerThread, write_model

SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def h2load() -> str:
    path = shutil.which("h2load")
    if path is None:
        pytest.fail(
            "h2load is not installed: the test command installs it"
            " (apt-get install -y nghttp2-client)"
        )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("h2load_models")
    for name in ("small", "large"):
        write_model(repo, name, IDENTITY)
    return repo


@pytest.fixture(scope="module")
def served(models: Path) -> Iterator[RunningServer]:
    with ServerThread(models, http_port=None, metrics_port=None) as srv:
        yield srv


def _body(url: str, tmp_path: Path, model: str, values: np.ndarray) -> tuple[Path, int]:
    """A ModelInfer request file for ``-d``, and the size of the reply message it gets (asked
    once through tritonclient's own stub; replies carry no ``id``, so all are the same)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "INPUT0", "FP32"
    tensor.shape.append(values.size)
    request.raw_input_contents.append(values.tobytes())
    message = request.SerializeToString()
    path = tmp_path / f"{model}.bin"
    path.write_bytes(struct.pack(">BI", 0, len(message)) + message)
    with grpc.insecure_channel(url) as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    return path, len(reply.SerializeToString())


def _run(h2load: str, url: str, body: Path | None, *args: str) -> str:
    command = [h2load, *args, "-N", "10"]  # no connection sits idle for more than 10 s
    if body is not None:
        command += ["-d", str(body)]
    command += ["-H", "content-type: application/grpc", "-H", "te: trailers", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _summary(output: str) -> dict[str, int]:
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed,"
        r" (\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    data = re.search(r"traffic: .* total, .* headers .*, .*\((\d+)\) data", output)
    assert requests and codes and data, output
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    summary = dict(zip(names, map(int, requests.groups()), strict=True))
    summary["2xx"] = int(codes.group(1))
    summary["data"] = int(data.group(1))
    return summary


def _assert_all_succeeded(summary: dict[str, int], n: int) -> None:
    assert summary == {
        **summary,
        "total": n,
        "done": n,
        "succeeded": n,
        "failed": 0,
        "errored": 0,
        "timeout": 0,
        "2xx": n,
    }


def _assert_counted(served: RunningServer, model: str, n: int) -> None:
    (stats,) = served.server.model_statistics(model)
    assert (stats.success.count, stats.fail.count) == (n, 0)


def test_many_unary_infers_on_many_streams(
    h2load: str, served: RunningServer, tmp_path: Path
) -> None:
    """2,000 calls from 8 connections with up to 16 concurrent streams each."""
    body, reply = _body(served.grpc_url, tmp_path, "small", np.arange(16, dtype=np.float32))
    n = 2000
    summary = _summary(
        _run(h2load, f"http://{served.grpc_url}{SERVICE}ModelInfer", body, "-n", str(n),
             "-c", "8", "-m", "16")
    )  # fmt: skip
    _assert_all_succeeded(summary, n)
    assert summary["data"] == n * (5 + reply)  # every reply one whole message
    _assert_counted(served, "small", n + 1)  # and the one call that measured the reply


def test_server_live_from_many_connections(
    h2load: str, served: RunningServer, tmp_path: Path
) -> None:
    body = tmp_path / "empty.bin"
    body.write_bytes(struct.pack(">BI", 0, 0))
    n = 640
    summary = _summary(
        _run(h2load, f"http://{served.grpc_url}{SERVICE}ServerLive", body, "-n", str(n),
             "-c", "64", "-m", "1")
    )  # fmt: skip
    _assert_all_succeeded(summary, n)
    assert summary["data"] == n * (5 + 2)  # ServerLiveResponse(live=true): 08 01


def test_large_messages_under_flow_control(
    h2load: str, served: RunningServer, tmp_path: Path
) -> None:
    """1 MiB each way per call with h2load's own windows: both peers must credit back."""
    values = np.random.default_rng(3).random(256 * 1024, dtype=np.float32)
    body, reply = _body(served.grpc_url, tmp_path, "large", values)
    n = 40
    summary = _summary(
        _run(h2load, f"http://{served.grpc_url}{SERVICE}ModelInfer", body, "-n", str(n),
             "-c", "2", "-m", "4", "-w", "16", "-W", "20")
    )  # fmt: skip
    _assert_all_succeeded(summary, n)
    assert summary["data"] == n * (5 + reply)
    _assert_counted(served, "large", n + 1)


def test_over_tls_with_alpn_h2(
    h2load: str, models: Path, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    settings = TlsSettings(cert=tls_files["cert"], key=tls_files["key"])
    with ServerThread(models, http_port=None, metrics_port=None, grpc_tls=settings) as srv:
        body = tmp_path / "empty.bin"
        body.write_bytes(struct.pack(">BI", 0, 0))
        n = 400
        output = _run(h2load, f"https://{srv.grpc_url}{SERVICE}ServerLive", body, "-n", str(n),
                      "-c", "4", "-m", "8")  # fmt: skip
        assert "Application protocol: h2" in output
        _assert_all_succeeded(_summary(output), n)


def test_nghttp_with_priority_frames_on_idle_streams(
    h2load: str, served: RunningServer, tmp_path: Path
) -> None:
    """nghttp (same package) opens with RFC 7540 PRIORITY frames on idle streams 3..11, then
    sends three calls on 13, 15, 17: PRIORITY on an idle stream is legal and opens nothing."""
    nghttp = str(Path(h2load).with_name("nghttp"))
    body = tmp_path / "empty.bin"
    body.write_bytes(struct.pack(">BI", 0, 0))
    url = f"http://{served.grpc_url}{SERVICE}ServerLive"
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    out = subprocess.run(
        [nghttp, "-nv", "-m", "3", "-d", str(body), *headers, url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "send PRIORITY frame" in out.stdout
    assert out.stdout.count("grpc-status: 0") == 3, out.stdout
    assert "recv GOAWAY" not in out.stdout  # nghttp itself says goodbye with one


def test_https_keep_alive_under_h2load_h1(
    h2load: str, models: Path, tls_files: dict[str, Path]
) -> None:
    """The HTTPS endpoint under h2load's HTTP/1.1 mode: many requests on few kept-alive TLS
    connections, ALPN ``http/1.1``."""
    settings = TlsSettings(cert=tls_files["cert"], key=tls_files["key"])
    with ServerThread(models, grpc_port=None, metrics_port=None, http_tls=settings) as srv:
        n = 2000
        url = f"https://{srv.http_url}/v2/health/live"
        command = [h2load, "--h1", "-n", str(n), "-c", "4", "-N", "10", url]
        out = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Application protocol: http/1.1" in out.stdout
        _assert_all_succeeded(_summary(out.stdout), n)
