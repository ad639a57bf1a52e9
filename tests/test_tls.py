"""TLS on the gRPC port (tritonserver's ``--grpc-use-ssl*`` flags) and HTTPS on the HTTP port.

The contexts are checked without sockets (a handshake between two ``ssl.MemoryBIO`` pairs), the
endpoints with the real ``tritonclient`` (gRPC sync and asyncio, HTTP), and the flags through
``kernel serve`` itself. Certificates are made at test time (``tls_files`` in conftest.py).
"""

from __future__ import annotations

import asyncio
import gc
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from geventhttpclient.response import HTTPConnectionClosed
from kernel_test_backends.configs import ADDSUB, REPEAT
from tritonclient.utils import InferenceServerException

from kernel._cli import build_parser
from kernel._errors import KernelError, Status
from kernel._options import TlsSettings
from kernel._serve_command import options_from_args
from kernel.frontends._tls import server_context
from kernel.testing import RunningServer, ServerThread, run_server, write_model

A = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
B = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)


def _settings(files: dict[str, Path], *, mutual: bool = False) -> TlsSettings:
    return TlsSettings(cert=files["cert"], key=files["key"], root_cert=files["ca"], mutual=mutual)


# -- the context, without sockets ---------------------------------------------------------------


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[ssl.SSLObject, Any]:
    """Run a TLS handshake between two in-memory endpoints; the client and the error, if any."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):  # a handshake takes a handful of flights
        for name, end in (("c", c), ("s", s)):
            if done[name]:
                continue
            try:
                end.do_handshake()
                done[name] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as exc:
                return c, exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            try:  # TLS 1.3 sends the client's certificate verdict after the handshake
                c.read(1)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return c, exc
            return c, None
    raise AssertionError("the handshake did not finish")


def _client(files: dict[str, Path], **kwargs: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.set_alpn_protocols(["h2", "http/1.1"])
    for name, value in kwargs.items():
        setattr(context, name, value)
    return context


def test_no_settings_serves_plain_tcp() -> None:
    assert server_context(None, "grpc") is None


@pytest.mark.parametrize(("endpoint", "protocol"), [("grpc", "h2"), ("http", "http/1.1")])
def test_alpn_selects_the_endpoints_protocol(
    tls_files: dict[str, Path], endpoint: Any, protocol: str
) -> None:
    context = server_context(_settings(tls_files), endpoint)
    assert context is not None
    client, error = _handshake(context, _client(tls_files))
    assert error is None
    assert client.selected_alpn_protocol() == protocol
    assert client.version() == "TLSv1.3"


def test_tls_1_1_and_cbc_suites_are_refused(tls_files: dict[str, Path]) -> None:
    """RFC 9113 9.2: HTTP/2 needs TLS 1.2 or newer and, with TLS 1.2, no block-listed suite."""
    context = server_context(_settings(tls_files), "grpc")
    assert context is not None
    old = _client(tls_files)
    with warnings.catch_warnings():  # the point is to offer the deprecated version
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    assert _handshake(context, old)[1] is not None
    cbc = _client(tls_files, maximum_version=ssl.TLSVersion.TLSv1_2)
    cbc.set_ciphers("ECDHE+AES+SHA256:ECDHE+AES+SHA384:!AESGCM")
    assert _handshake(context, cbc)[1] is not None
    aead = _client(tls_files, maximum_version=ssl.TLSVersion.TLSv1_2)
    client, error = _handshake(context, aead)
    assert error is None
    assert client.version() == "TLSv1.2"
    cipher = client.cipher()
    assert cipher is not None and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])
    assert context.security_level >= 2


def test_mutual_tls_requires_a_client_certificate_from_the_root(tls_files: dict[str, Path]) -> None:
    context = server_context(_settings(tls_files, mutual=True), "grpc")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert _handshake(context, _client(tls_files))[1] is not None  # no certificate
    stranger = _client(tls_files)
    stranger.load_cert_chain(tls_files["stranger_cert"], tls_files["stranger_key"])
    assert _handshake(context, stranger)[1] is not None
    member = _client(tls_files)
    member.load_cert_chain(tls_files["client_cert"], tls_files["client_key"])
    assert _handshake(context, member)[1] is None


def test_without_mutual_no_client_certificate_is_asked(tls_files: dict[str, Path]) -> None:
    context = server_context(_settings(tls_files), "grpc")
    assert context is not None and context.verify_mode == ssl.CERT_NONE


@pytest.fixture
def encrypted_key(tls_files: dict[str, Path], tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(tls_files["key"].read_bytes(), password=None)
    path = tmp_path / "encrypted.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cert": None}, "--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key"),
        ({"key": None}, "--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key"),
        ({"cert": "missing"}, "--grpc-server-cert: cannot read '{missing}': No such file"),
        ({"key": "missing"}, "--grpc-server-key: cannot read '{missing}': No such file"),
        ({"key": "stranger_key"}, "not a PEM certificate and its matching unencrypted private"),
        ({"cert": "garbage"}, "not a PEM certificate and its matching unencrypted private"),
        ({"key": "encrypted"}, "not a PEM certificate and its matching unencrypted private"),
        ({"root_cert": "garbage"}, "--grpc-root-cert '{garbage}': not a PEM certificate"),
        ({"root_cert": "missing"}, "--grpc-root-cert: cannot read '{missing}'"),
        ({"root_cert": None, "mutual": True}, "--grpc-use-ssl-mutual needs --grpc-root-cert"),
    ],
)
def test_bad_files_are_named_with_their_flag(
    tls_files: dict[str, Path],
    tmp_path: Path,
    encrypted_key: Path,
    change: dict[str, Any],
    message: str,
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    named = {
        **tls_files,
        "missing": tmp_path / "missing.pem",
        "garbage": garbage,
        "encrypted": encrypted_key,
    }
    fields: dict[str, Any] = {"cert": "cert", "key": "key", "root_cert": "ca", "mutual": False}
    fields.update(change)
    settings = TlsSettings(**{k: named[v] if isinstance(v, str) else v for k, v in fields.items()})
    with pytest.raises(KernelError) as caught:
        server_context(settings, "grpc")
    assert caught.value.status is Status.INVALID_ARG
    assert message.format(**{k: str(v) for k, v in named.items()}) in caught.value.message


# -- flags -------------------------------------------------------------------------------------


def test_flags_become_settings(
    tls_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    parse = build_parser().parse_args
    args = parse(
        [
            "serve",
            "--grpc-use-ssl-mutual=true",  # implies --grpc-use-ssl, as in tritonserver
            f"--grpc-server-cert={tls_files['cert']}",
            f"--grpc-server-key={tls_files['key']}",
            f"--grpc-root-cert={tls_files['ca']}",
            "--http-use-ssl=1",
            f"--http-server-cert={tls_files['cert']}",
            f"--http-server-key={tls_files['key']}",
        ]
    )
    options = options_from_args(args)
    assert options.grpc_tls == _settings(tls_files, mutual=True)
    assert options.http_tls == TlsSettings(cert=tls_files["cert"], key=tls_files["key"])

    assert options_from_args(parse(["serve"])).grpc_tls is None
    ignored = parse(["serve", f"--grpc-server-cert={tls_files['cert']}"])
    with caplog.at_level("WARNING", logger="kernel.serve"):
        assert options_from_args(ignored).grpc_tls is None
    assert "ignoring --grpc-server-cert: --grpc-use-ssl is false" in caplog.text


@pytest.mark.parametrize(
    ("flags", "tls", "mutual"),
    [
        # checked against tritonserver 2.51: the mutual flag turns TLS on whatever its value,
        # and the flags apply in order
        (["--grpc-use-ssl-mutual=false"], True, False),
        (["--grpc-use-ssl=false", "--grpc-use-ssl-mutual=false"], True, False),
        (["--grpc-use-ssl-mutual=true", "--grpc-use-ssl=false"], False, None),
        (["--grpc-use-ssl-mutual=false", "--grpc-use-ssl=false"], False, None),
        (["--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true"], True, True),
        (["--grpc-use-ssl=1"], True, False),
    ],
)
def test_mutual_flag_turns_tls_on_as_in_tritonserver(
    flags: list[str], tls: bool, mutual: bool | None
) -> None:
    options = options_from_args(build_parser().parse_args(["serve", *flags]))
    assert (options.grpc_tls is not None) is tls
    assert (options.grpc_tls.mutual if options.grpc_tls else None) is mutual
    assert options.http_tls is None


def test_serve_exits_with_a_message_for_a_bad_certificate(repo: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "kernel", "serve", "--model-repository", str(repo)),
            *(
                "--host=127.0.0.1",
                "--http-port=0",
                "--grpc-port=0",
                "--metrics-port=0",
                "--grpc-use-ssl=true",
            ),
            *(f"--grpc-server-cert={missing}", f"--grpc-server-key={missing}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 1
    assert f"--grpc-server-cert: cannot read '{missing}': No such file or directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_with_the_tls_flags_end_to_end(tls_files: dict[str, Path], tmp_path: Path) -> None:
    """``kernel serve`` with tritonserver's mutual-TLS flags and HTTPS: tritonclient connects
    with its certificate on both ports; SIGTERM still ends it with status 0."""
    repo = tmp_path / "models"
    write_model(repo, "addsub", ADDSUB)
    files = {k: str(v) for k, v in tls_files.items()}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "kernel", "serve", "--model-repository", str(repo)),
            *("--host=127.0.0.1", "--http-port=0", "--grpc-port=0", "--metrics-port=0"),
            "--grpc-use-ssl-mutual=true",
            *(f"--grpc-server-cert={files['cert']}", f"--grpc-server-key={files['key']}"),
            f"--grpc-root-cert={files['ca']}",
            "--http-use-ssl=true",
            *(f"--http-server-cert={files['cert']}", f"--http-server-key={files['key']}"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        ports: dict[str, str] = {}
        for _ in range(200):  # bounded: the start-up lines, then the model table
            line = process.stderr.readline()
            found = re.search(r"started (\w+) endpoint at (\S+)", line)
            if found:
                ports[found.group(1)] = found.group(2)
            if not line or line.startswith("| addsub "):
                break
        assert {"grpc", "http"} <= set(ports), ports
        client = _grpc_client(ports["grpc"], tls_files, "client")
        try:
            np.testing.assert_array_equal(
                client.infer("addsub", _addsub_inputs(grpcclient)).as_numpy("OUTPUT0"), A + B
            )
        finally:
            client.close()
        refused = _refused(_grpc_client(ports["grpc"], tls_files, None))
        assert refused.status() == "StatusCode.UNAVAILABLE"
        https = _https_client(ports["http"], tls_files, None)
        try:
            assert https.is_server_live()
        finally:
            https.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


# -- gRPC with tritonclient --------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("tls_models")
    write_model(repo, "addsub", ADDSUB)
    write_model(repo, "repeat", REPEAT)
    return repo


@pytest.fixture(scope="module")
def tls_server(models: Path, tls_files: dict[str, Path]) -> Iterator[RunningServer]:
    with ServerThread(
        models,
        metrics_port=None,
        grpc_tls=_settings(tls_files),
        http_tls=TlsSettings(cert=tls_files["cert"], key=tls_files["key"]),
    ) as served:
        yield served


@pytest.fixture(scope="module")
def mutual_server(models: Path, tls_files: dict[str, Path]) -> Iterator[RunningServer]:
    with ServerThread(
        models,
        metrics_port=None,
        grpc_tls=_settings(tls_files, mutual=True),
        http_tls=_settings(tls_files, mutual=True),
    ) as served:
        yield served


def _addsub_inputs(module: Any) -> list[Any]:
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(A)
    inputs[1].set_data_from_numpy(B)
    return inputs


def _grpc_client(url: str, files: dict[str, Path], who: str | None) -> Any:
    cert = {}
    if who is not None:
        cert = {
            "private_key": str(files[f"{who}_key"]),
            "certificate_chain": str(files[f"{who}_cert"]),
        }
    return grpcclient.InferenceServerClient(
        url, ssl=True, root_certificates=str(files["ca"]), **cert
    )


def _exercise_grpc(client: grpcclient.InferenceServerClient) -> None:
    """Health, metadata, a unary infer and a decoupled stream."""
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_model_metadata("addsub").name == "addsub"
    result = client.infer("addsub", _addsub_inputs(grpcclient))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        tensor = grpcclient.InferInput("IN", [3], "INT32")
        tensor.set_data_from_numpy(np.array([7, 8, 9], dtype=np.int32))
        client.async_stream_infer("repeat", [tensor])
        got = [results.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    assert [error for _, error in got] == [None, None, None]
    assert [int(r.as_numpy("OUT")[0]) for r, _ in got] == [7, 8, 9]


def test_grpc_over_tls(tls_server: RunningServer, tls_files: dict[str, Path]) -> None:
    client = _grpc_client(tls_server.grpc_url, tls_files, None)
    try:
        _exercise_grpc(client)
    finally:
        client.close()


async def test_grpc_over_tls_asyncio_client(
    tls_server: RunningServer, tls_files: dict[str, Path]
) -> None:
    client = aioclient.InferenceServerClient(
        tls_server.grpc_url, ssl=True, root_certificates=str(tls_files["ca"])
    )
    try:
        assert await client.is_server_live()
        result = await client.infer("addsub", _addsub_inputs(aioclient))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    finally:
        await client.close()


def _refused(client: Any) -> InferenceServerException:
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.is_server_live()
    finally:
        client.close()
    return caught.value


def test_grpc_tls_refuses_plaintext_and_untrusting_clients(
    tls_server: RunningServer, tls_files: dict[str, Path]
) -> None:
    plain = _refused(grpcclient.InferenceServerClient(tls_server.grpc_url))
    assert plain.status() == "StatusCode.UNAVAILABLE"
    distrust = grpcclient.InferenceServerClient(
        tls_server.grpc_url, ssl=True, root_certificates=str(tls_files["stranger_cert"])
    )
    assert _refused(distrust).status() == "StatusCode.UNAVAILABLE"


def test_grpc_mutual_tls(mutual_server: RunningServer, tls_files: dict[str, Path]) -> None:
    member = _grpc_client(mutual_server.grpc_url, tls_files, "client")
    try:
        _exercise_grpc(member)
    finally:
        member.close()
    for who in (None, "stranger"):
        refused = _refused(_grpc_client(mutual_server.grpc_url, tls_files, who))
        assert refused.status() == "StatusCode.UNAVAILABLE", who


def test_grpc_port_negotiates_h2_over_tls(
    tls_server: RunningServer, tls_files: dict[str, Path]
) -> None:
    host, port = tls_server.grpc_url.rsplit(":", 1)
    context = _client(tls_files)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"


# -- HTTPS with tritonclient.http --------------------------------------------------------------


def _https_client(url: str, files: dict[str, Path], who: str | None) -> Any:
    options = {"ca_certs": str(files["ca"])}
    if who is not None:
        options |= {"certfile": str(files[f"{who}_cert"]), "keyfile": str(files[f"{who}_key"])}
    return httpclient.InferenceServerClient(
        url, ssl=True, ssl_options=options, connection_timeout=10, network_timeout=10
    )


def _exercise_http(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_model_metadata("addsub")["name"] == "addsub"
    result = client.infer("addsub", _addsub_inputs(httpclient))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    binary = _addsub_inputs(httpclient)
    for tensor in binary:
        tensor.set_data_from_numpy(tensor_data := A * 2, binary_data=True)
    result = client.infer("addsub", binary)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), tensor_data * 2)


def test_https(tls_server: RunningServer, tls_files: dict[str, Path]) -> None:
    client = _https_client(tls_server.http_url, tls_files, None)
    try:
        _exercise_http(client)
    finally:
        client.close()


def test_https_refuses_plain_http(tls_server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(
        tls_server.http_url, connection_timeout=10, network_timeout=10
    )
    try:
        with pytest.raises((ssl.SSLError, OSError, HTTPConnectionClosed)):
            client.is_server_live()
    finally:
        client.close()


def test_https_mutual(mutual_server: RunningServer, tls_files: dict[str, Path]) -> None:
    member = _https_client(mutual_server.http_url, tls_files, "client")
    try:
        _exercise_http(member)
    finally:
        member.close()
    for who in (None, "stranger"):
        client = _https_client(mutual_server.http_url, tls_files, who)
        try:
            # TLS 1.2 fails the handshake; TLS 1.3 closes after it, before any answer
            with pytest.raises((ssl.SSLError, OSError, HTTPConnectionClosed)):
                client.is_server_live()
        finally:
            client.close()


async def test_tls_on_the_asyncio_event_loop(models: Path, tls_files: dict[str, Path]) -> None:
    """``kernel serve`` runs on asyncio's own loop when uvloop is missing: TLS works there too,
    and the server stops while a client sits in the middle of a handshake."""
    settings = _settings(tls_files)
    async with run_server(models, metrics_port=None, grpc_tls=settings, http_tls=settings) as srv:
        client = aioclient.InferenceServerClient(
            srv.grpc_url, ssl=True, root_certificates=str(tls_files["ca"])
        )
        try:
            result = await client.infer("addsub", _addsub_inputs(aioclient))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
        finally:
            await client.close()
        host, port = srv.http_url.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=_client(tls_files), server_hostname="localhost"
        )
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()
        stalled = [
            await asyncio.open_connection(*url.rsplit(":", 1))
            for url in (srv.grpc_url, srv.http_url)
        ]
    for _, stalled_writer in stalled:
        stalled_writer.close()


async def test_a_bad_file_fails_the_start_and_leaks_no_socket(models: Path, tmp_path: Path) -> None:
    """In-process (``run_server``) with ``exit_on_frontend_error``: the start fails with the
    flag's message, the endpoint that already started is stopped, and the bound socket is closed
    (a leak would be a ResourceWarning, an error here). Without it, the other endpoints serve."""
    missing = tmp_path / "missing.pem"
    bad = TlsSettings(cert=missing, key=missing)
    async with run_server(models, metrics_port=None, grpc_tls=bad) as running:
        assert set(running.server.ports) == {"http"}
        assert (
            f"--grpc-server-cert: cannot read '{missing}'"
            in (running.server.frontend_errors["grpc"])
        )
    with pytest.raises(BaseException) as caught:  # anyio wraps it in groups
        async with run_server(models, metrics_port=None, grpc_tls=bad, exit_on_frontend_error=True):
            pass
    errors = [caught.value]
    while isinstance(errors[-1], BaseExceptionGroup):
        errors.append(errors[-1].exceptions[0])
    assert isinstance(errors[-1], KernelError)
    assert f"--grpc-server-cert: cannot read '{missing}'" in errors[-1].message
    gc.collect()
