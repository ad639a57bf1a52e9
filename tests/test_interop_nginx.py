"""triton-kernel behind a real nginx (Debian package ``nginx``), as a Kubernetes ingress puts it:
``grpc_pass`` for the gRPC port (cleartext both ways; TLS terminated at nginx; re-encrypted to a
kernel requiring client certificates) and ``proxy_pass`` for the HTTP port (cleartext, or
re-encrypted to an HTTPS kernel requiring client certificates), driven by the real
``tritonclient`` through nginx.

nginx runs as a child process of the test with its own configuration
(``tests/interop/nginx.conf.template``) in a temporary folder, on free loopback ports.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kernel._options import TlsSettings
from kernel.testing import RunningServer, ServerThread, write_model

TEMPLATE = Path(__file__).parent / "interop" / "nginx.conf.template"
_LISTENERS = ("GRPC", "GRPC_TLS", "GRPC_TO_TLS", "HTTP", "HTTP_TO_TLS")
ADDSUB = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "addsub" } }
"""
SLOW = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "sleep" } }
parameters { key: "sleep_ms" value { string_value: "1500" } }
"""
REPEAT = """
backend: "kerneltest"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
parameters { key: "behaviour" value { string_value: "repeat" } }
"""


@dataclass(frozen=True)
class Proxy:
    """nginx's listening addresses (``host:port``)."""

    grpc: str
    grpc_tls: str
    grpc_to_tls: str
    http: str
    http_to_tls: str


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    path = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if path is None:
        pytest.fail(
            "nginx is not installed: the test command installs it (apt-get install -y nginx)"
        )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("nginx_models")
    write_model(repo, "addsub", ADDSUB)
    write_model(repo, "repeat", REPEAT)
    write_model(repo, "slow", SLOW)
    return repo


@pytest.fixture(scope="module")
def kernel(models: Path) -> Iterator[RunningServer]:
    with ServerThread(models, metrics_port=None) as served:
        yield served


@pytest.fixture(scope="module")
def mutual_kernel(models: Path, tls_files: dict[str, Path]) -> Iterator[RunningServer]:
    settings = TlsSettings(
        cert=tls_files["cert"], key=tls_files["key"], root_cert=tls_files["ca"], mutual=True
    )
    with ServerThread(models, metrics_port=None, grpc_tls=settings, http_tls=settings) as served:
        yield served


def _start_nginx(binary: str, prefix: Path, values: dict[str, str]) -> subprocess.Popen[bytes]:
    """nginx with ``values`` filled into the template, once it listens on every port.

    :raises RuntimeError: with nginx's error log, when it exits or does not listen in time.
    """
    config = TEMPLATE.read_text()
    for name, value in values.items():
        config = config.replace(f"@{name}@", value)
    assert re.search(r"@[A-Z_]+@", config) is None, "a placeholder without a value"
    (prefix / "nginx.conf").write_text(config)
    error_log = prefix / "error.log"
    error_log.unlink(missing_ok=True)  # only this attempt's lines are judged
    command = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(error_log)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    ports = [int(values[name]) for name in _LISTENERS]
    while ports:  # bounded: until nginx listens on every port, or it exited, or 20 s passed
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"nginx did not start: {error_log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
            ports.pop(0)
        except OSError:
            time.sleep(0.05)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def proxy(
    nginx_binary: str,
    kernel: RunningServer,
    mutual_kernel: RunningServer,
    tls_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxy]:
    prefix = tmp_path_factory.mktemp("nginx")
    values = {
        "PREFIX": str(prefix),
        "KERNEL_GRPC": _port(kernel.grpc_url),
        "KERNEL_GRPCS": _port(mutual_kernel.grpc_url),
        "KERNEL_HTTP": _port(kernel.http_url),
        "KERNEL_HTTPS": _port(mutual_kernel.http_url),
        "CERT": str(tls_files["cert"]),
        "KEY": str(tls_files["key"]),
        "CA": str(tls_files["ca"]),
        "CLIENT_CERT": str(tls_files["client_cert"]),
        "CLIENT_KEY": str(tls_files["client_key"]),
    }
    for attempt in range(3):  # a free port may be taken by another process before nginx binds
        ports = dict(zip(_LISTENERS, _free_ports(len(_LISTENERS)), strict=True))
        values |= {name: str(port) for name, port in ports.items()}
        try:
            process = _start_nginx(nginx_binary, prefix, values)
            break
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield Proxy(**{name.lower(): f"127.0.0.1:{port}" for name, port in ports.items()})
    finally:
        _stop(process)
    # nginx logs an upstream that misbehaved (reset, closed early, bad framing) at [error]
    levels = ("[error]", "[crit]", "[alert]", "[emerg]")
    lines = (prefix / "error.log").read_text().splitlines()
    errors = [x for x in lines if any(w in x for w in levels)]
    assert not errors, errors


def _addsub_inputs(module: Any, a: np.ndarray, b: np.ndarray) -> list[Any]:
    inputs = [
        module.InferInput("INPUT0", list(a.shape), "FP32"),
        module.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def _exercise_grpc(client: grpcclient.InferenceServerClient) -> None:
    """Metadata, unary infer (small and 4 MiB), errors, and a decoupled stream."""
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "triton"
    metadata = client.get_model_metadata("addsub")
    assert [i.name for i in metadata.inputs] == ["INPUT0", "INPUT1"]
    assert client.get_model_config("addsub").config.name == "addsub"
    for size in (4, 1024 * 1024):
        a = np.arange(size, dtype=np.float32)
        b = np.ones(size, dtype=np.float32)
        result = client.infer("addsub", _addsub_inputs(grpcclient, a, b))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"  # the trailers passed through
    assert "nope" in (caught.value.message() or "")

    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for rid, values in (("one", [1, 2, 3]), ("two", [4]), ("three", [5, 6])):
            tensor = grpcclient.InferInput("IN", [len(values)], "INT32")
            tensor.set_data_from_numpy(np.array(values, dtype=np.int32))
            client.async_stream_infer("repeat", [tensor], request_id=rid)
        got = [results.get(timeout=30) for _ in range(6)]
    finally:
        client.stop_stream()
    by_id: dict[str, list[int]] = {}
    for result, error in got:
        assert error is None
        by_id.setdefault(result.get_response().id, []).append(int(result.as_numpy("OUT")[0]))
    assert by_id == {"one": [1, 2, 3], "two": [4], "three": [5, 6]}


def test_grpc_through_nginx(proxy: Proxy) -> None:
    client = grpcclient.InferenceServerClient(proxy.grpc)
    try:
        _exercise_grpc(client)
    finally:
        client.close()


def test_grpc_tls_terminated_at_nginx(proxy: Proxy, tls_files: dict[str, Path]) -> None:
    client = grpcclient.InferenceServerClient(
        proxy.grpc_tls, ssl=True, root_certificates=str(tls_files["ca"])
    )
    try:
        _exercise_grpc(client)
    finally:
        client.close()


def test_grpc_reencrypted_to_a_mutual_tls_kernel(proxy: Proxy) -> None:
    """nginx's OpenSSL client with a client certificate against ``--grpc-use-ssl-mutual``."""
    client = grpcclient.InferenceServerClient(proxy.grpc_to_tls)
    try:
        _exercise_grpc(client)
    finally:
        client.close()


async def test_many_concurrent_calls_multiplexed_through_nginx(proxy: Proxy) -> None:
    client = aioclient.InferenceServerClient(proxy.grpc)
    try:
        a = np.arange(64, dtype=np.float32)

        async def one(i: int) -> None:
            b = np.full(64, i, dtype=np.float32)
            result = await client.infer("addsub", _addsub_inputs(aioclient, a, b))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)

        async with asyncio.timeout(60):
            await asyncio.gather(*(one(i) for i in range(200)))
    finally:
        await client.close()


@pytest.mark.parametrize("route", ["http", "http_to_tls"])
def test_http_through_nginx(proxy: Proxy, route: str) -> None:
    """``proxy_pass`` to the HTTP port, in cleartext or re-encrypted to an HTTPS kernel that
    requires nginx's client certificate."""
    client = httpclient.InferenceServerClient(
        getattr(proxy, route), connection_timeout=10, network_timeout=30
    )
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "triton"
        assert client.get_model_metadata("addsub")["name"] == "addsub"
        for size, binary in ((4, False), (1024 * 1024, True)):
            a = np.arange(size, dtype=np.float32)
            b = np.ones(size, dtype=np.float32)
            inputs = _addsub_inputs(httpclient, a, b)
            for tensor, values in zip(inputs, (a, b), strict=True):
                tensor.set_data_from_numpy(values, binary_data=binary)
            result = client.infer("addsub", inputs)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("nope")
        assert "nope" in (caught.value.message() or "")
    finally:
        client.close()


def test_deadlines_and_cancellation_through_nginx(proxy: Proxy, kernel: RunningServer) -> None:
    """A call past its deadline and a stream cancelled mid-way: nginx resets the upstream
    streams; the kernel carries on serving on the same upstream connections."""
    client = grpcclient.InferenceServerClient(proxy.grpc)
    try:
        slow = grpcclient.InferInput("INPUT0", [2], "FP32")
        slow.set_data_from_numpy(np.zeros(2, dtype=np.float32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("slow", [slow], client_timeout=0.2)
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"

        results: queue.Queue[Any] = queue.Queue()
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
        tensor.set_data_from_numpy(np.zeros(2, dtype=np.float32))
        client.async_stream_infer("slow", [tensor])
        client.stop_stream(cancel_requests=True)

        a = np.arange(4, dtype=np.float32)
        result = client.infer("addsub", _addsub_inputs(grpcclient, a, a))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
    finally:
        client.close()
    slow_version = kernel.server.route("slow")
    for _ in range(400):  # bounded: the two slow requests end (answered or cancelled)
        if not slow_version.in_flight:
            break
        time.sleep(0.01)
    assert slow_version.in_flight == 0
