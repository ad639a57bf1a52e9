"""The frontend over raw HTTP: error shapes and statuses, SSE framing, disconnects, API keys."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from kernel.frontends import FrontendConfig
from kernel.testing import RunningServer, ServerThread


def _exchange(url: str, raw: bytes, *, timeout: float = 30.0) -> bytes:
    """Send ``raw`` and read until the server closes (requests say ``Connection: close``)."""
    host, port = url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _post(url: str, path: str, body: bytes, headers: str = "") -> tuple[int, bytes, bytes]:
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    head, _, rest = _exchange(url, raw).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


@pytest.mark.parametrize(
    ("path", "body", "status", "wording"),
    [
        ("/v1/completions", b"{oops", 400, "could not parse the JSON body"),
        ("/v1/completions", b'{"model": "nope", "prompt": "p"}', 404, "does not exist"),
        ("/v1/chat/completions", b'{"model": "openai_echo"}', 400, "'messages'"),
        ("/v1/embeddings", b"{}", 404, "Invalid URL (POST /v1/embeddings)"),
        ("/v1/models", b"{}", 405, "Method not allowed"),
    ],
)
def test_error_shape_and_status(
    openai_server: RunningServer, path: str, body: bytes, status: int, wording: str
) -> None:
    code, head, rest = _post(openai_server.url("openai"), path, body)
    assert code == status
    assert b"content-type: application/json" in head.lower()
    error = json.loads(rest)["error"]
    assert wording in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_sse_framing_on_the_wire(openai_server: RunningServer) -> None:
    body = b'{"model": "openai_echo", "prompt": "a b", "max_tokens": 2, "stream": true}'
    code, head, rest = _post(openai_server.url("openai"), "/v1/completions", body)
    assert code == 200
    assert b"content-type: text/event-stream" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    events = _dechunk(rest).split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    data = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert [d["choices"][0]["text"] for d in data] == ["a", " b", ""]
    assert data[-1]["choices"][0]["finish_reason"] == "length"


def _wait_for(path: Path, seconds: float = 30.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    return ""


@pytest.mark.parametrize("stream", [True, False])
def test_a_stop_sequence_the_model_ignores_ends_the_request_in_the_model(
    openai_server: RunningServer, tmp_path: Path, stream: bool
) -> None:
    marker = tmp_path / "cancelled"
    body = {
        "model": "openai_echo",
        "prompt": "tick tock",
        "max_tokens": 2000,
        "stop": ["tock"],
        "stream": stream,
        "delay_ms": 5,
        "ignore_stop": True,
        "cancel_marker": str(marker),
    }
    code, _, rest = _post(openai_server.url("openai"), "/v1/completions", json.dumps(body).encode())
    assert code == 200
    if stream:
        events = _dechunk(rest).split(b"\n\n")
        data = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
        assert "".join(d["choices"][0]["text"] for d in data) == "tick "
        assert data[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        assert json.loads(rest)["choices"][0]["text"] == "tick "
    assert _wait_for(marker) == "cancelled"  # the frontend ended the generation


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_cancels_the_request_in_the_model(
    openai_server: RunningServer, tmp_path: Path, stream: bool
) -> None:
    marker = tmp_path / "cancelled"
    body = json.dumps(
        {
            "model": "openai_echo",
            "prompt": "tick tock",
            "max_tokens": 2000,
            "stream": stream,
            "delay_ms": 20,
            "cancel_marker": str(marker),
        }
    ).encode()
    raw = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    host, port = openai_server.url("openai").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        if stream:
            received = b""
            while received.count(b"data: ") < 3:  # a few tokens arrived: the model is busy
                received += sock.recv(65536)
        else:
            time.sleep(0.3)
    assert _wait_for(marker) == "cancelled"


def test_api_key(tmp_path: Path) -> None:
    config = FrontendConfig(port=0, args=["--openai-api-key", "s3cret"])
    with ServerThread(tmp_path, frontends={"openai": config}) as running:
        url = running.url("openai")
        get = "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        refused = _exchange(url, (get + "\r\n").encode())
        assert refused.startswith(b"HTTP/1.1 401")
        assert b"invalid_api_key" in refused
        wrong = _exchange(url, (get + "Authorization: Bearer nope\r\n\r\n").encode())
        assert wrong.startswith(b"HTTP/1.1 401")
        allowed = _exchange(url, (get + "Authorization: Bearer s3cret\r\n\r\n").encode())
        assert allowed.startswith(b"HTTP/1.1 200")
        assert json.loads(allowed.partition(b"\r\n\r\n")[2]) == {"object": "list", "data": []}
        health = _exchange(
            url, b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert health.startswith(b"HTTP/1.1 200")  # no key needed outside /v1


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    from triton_frontend_openai import OpenAIFrontendPlugin

    (entry,) = [e for e in entry_points(group="kernel.frontends") if e.name == "openai"]
    assert entry.load() is OpenAIFrontendPlugin
    assert OpenAIFrontendPlugin.name == "openai" and OpenAIFrontendPlugin.default_port is None


def test_kernel_serve_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_frontend_openai import OpenAIFrontend, OpenAIFrontendPlugin

    from kernel.testing import serve_command_line

    plugin = OpenAIFrontendPlugin()
    args, options = serve_command_line(
        ["--openai-port", "9000", "--openai-api-key", "k"], {"openai": plugin}
    )
    assert options.frontends["openai"].port == 9000
    frontend = plugin.create(args)
    assert isinstance(frontend, OpenAIFrontend) and frontend._api_key == "k"
    _, off = serve_command_line([], {"openai": plugin})
    assert "openai" not in off.frontends
    monkeypatch.setenv("OPENAI_FRONTEND_API_KEY", "from-env")
    keyed = plugin.create(serve_command_line(["--openai-port", "0"], {"openai": plugin})[0])
    assert isinstance(keyed, OpenAIFrontend) and keyed._api_key == "from-env"
