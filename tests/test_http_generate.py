"""Triton's generate extension over real sockets: ``generate`` and ``generate_stream`` (SSE)
against token-streaming Python models, read with an SSE client library (httpx-sse) and raw
HTTP; client disconnects cancel the request in the model; a slow reader holds the model.

Expected answers are the ones tritonserver 2.51 gives (checked against the real server), except
where it answers a client's mistake 500: 400 here, with its words.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from kernel import ModelControlMode
from kernel.testing import RunningServer, ServerThread, write_model

TOKENS_MODEL = b'''
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Streams one response per token: the words of text_input, max_tokens of them (cycled),
    or tokens of token_bytes "x"s; delay_ms between tokens. With a "tag" parameter, writes its
    progress ("sent N", "done N", "cancelled N") to status_dir/tag."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.status_dir = config["parameters"]["status_dir"]["string_value"]

    def _status(self, tag, text):
        if tag:
            path = os.path.join(self.status_dir, tag)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)

    def execute(self, requests):
        for request in requests:
            self._stream(request)
        return None

    def _stream(self, request):
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
        text = text.reshape(-1)[0].decode()
        params = json.loads(request.parameters())
        tag = params.get("tag", "")
        if "fail" in params:
            error = pb_utils.TritonError("the model refused: " + str(params["fail"]))
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)
            return
        words = text.split() or [""]
        limit = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        count = int(limit.as_numpy().reshape(-1)[0]) if limit is not None else len(words)
        delay = float(params.get("delay_ms", 0)) / 1000
        size = int(params.get("token_bytes", 0))
        for i in range(count):
            if request.is_cancelled():
                self._status(tag, f"cancelled {i}")
                sender.send(flags=final)
                return
            token = "x" * size if size else words[i % len(words)]
            outputs = [
                pb_utils.Tensor("text_output", np.array([token.encode()], dtype=np.object_)),
                pb_utils.Tensor("index", np.array([i], dtype=np.int32)),
            ]
            sender.send(pb_utils.InferenceResponse(outputs))
            self._status(tag, f"sent {i + 1}")
            if delay:
                time.sleep(delay)
        sender.send(flags=final)
        self._status(tag, f"done {count}")
'''

TOKENS_CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }},
        {{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true }} ]
output [ {{ name: "text_output" data_type: TYPE_STRING dims: [ 1 ] }},
         {{ name: "index" data_type: TYPE_INT32 dims: [ 1 ] }} ]
parameters {{ key: "status_dir" value {{ string_value: "{status}" }} }}
{extra}
"""

ECHO_MODEL = b"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
            vec = pb_utils.get_input_tensor_by_name(request, "vec")
            values = vec.as_numpy() if vec is not None else np.zeros((1, 2), np.float32)
            word = text.reshape(-1)[0].decode()
            answer = np.array([[(word + " " + request.parameters()).encode()]], np.object_)
            shape = np.array([list(text.shape) + list(values.shape)], dtype=np.int64)
            outputs = [
                pb_utils.Tensor("text_output", answer),
                pb_utils.Tensor("shape", shape),
                pb_utils.Tensor("vec_out", values.astype(np.float32)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
"""

ECHO_CONFIG = """
backend: "python"
max_batch_size: 4
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "vec" data_type: TYPE_FP32 dims: [ -1 ] optional: true } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "shape" data_type: TYPE_INT64 dims: [ -1 ] },
         { name: "vec_out" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

IN_PROCESS = 'parameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }'


@pytest.fixture(scope="module")
def status_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("status")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, status_dir: Path) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("models")
    for name, extra in (("tokens", ""), ("tokens_inproc", IN_PROCESS)):
        config = TOKENS_CONFIG.format(status=status_dir, extra=extra)
        write_model(repository, name, config, files={"1/model.py": TOKENS_MODEL})
    write_model(repository, "echo", ECHO_CONFIG, files={"1/model.py": ECHO_MODEL})
    with ServerThread(repository, grpc_port=None, metrics_port=None) as running:
        yield running


@pytest.fixture
def client(served: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{served.http_url}", timeout=30) as http:
        yield http


def _events(client: httpx.Client, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    url = f"/v2/models/{model}/generate_stream"
    with connect_sse(client, "POST", url, json=body) as source:
        assert source.response.status_code == 200
        content_type = source.response.headers["content-type"]
        assert content_type == "text/event-stream; charset=utf-8"
        return [json.loads(event.data) for event in source.iter_sse()]


# -- generate -------------------------------------------------------------------------------------


def test_generate_maps_inputs_parameters_and_outputs(client: httpx.Client) -> None:
    reply = client.post("/v2/models/echo/generate", json={"text_input": "hi", "temperature": 0.5})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    # keys sorted, one-element outputs unwrapped, the batch dimension added ([1, 1] and [1, 2])
    assert reply.text == (
        '{"model_name":"echo","model_version":"1","shape":[1,1,1,2],'
        '"text_output":"hi {\\"temperature\\": 0.5}","vec_out":[0.0,0.0]}'
    )


def test_generate_parameters_object_feeds_inputs_too(client: httpx.Client) -> None:
    body = {"text_input": "a", "parameters": {"vec": [1, 2, 3], "n": 3, "flag": True}}
    doc = client.post("/v2/models/echo/versions/1/generate", json=body).json()
    assert doc["shape"] == [1, 1, 1, 3]
    assert doc["vec_out"] == [1.0, 2.0, 3.0]
    assert json.loads(doc["text_output"].split(" ", 1)[1]) == {"n": 3, "flag": True}


def test_generate_sets_the_request_id(client: httpx.Client) -> None:
    doc = client.post("/v2/models/echo/generate", json={"text_input": "a", "id": "r1"}).json()
    assert doc["id"] == "r1"
    assert doc["text_output"] == 'a {"id": "r1"}'


def test_generate_of_a_decoupled_model_needs_exactly_one_response(client: httpx.Client) -> None:
    doc = client.post("/v2/models/tokens/generate", json={"text_input": "one", "max_tokens": 1})
    assert doc.status_code == 200
    assert doc.json() == {
        "index": 0,
        "model_name": "tokens",
        "model_version": "1",
        "text_output": "one",
    }
    many = client.post("/v2/models/tokens/generate", json={"text_input": "a b c"})
    assert many.status_code == 400
    assert many.json() == {
        "error": "generate expects model to produce exactly 1 response, use generate stream"
        " for model that generates various number of responses"
    }
    none = client.post("/v2/models/tokens/generate", json={"text_input": "a", "max_tokens": 0})
    assert none.status_code == 400 and "exactly 1 response" in none.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"notjson", 400, "failed to parse the request JSON buffer: "),
        (b"[1]", 400, "attempt to get members for non-object"),
        (
            b'{"text_input": "a", "extra": [1, 2]}',
            400,
            "parameter 'extra' has invalid type. It should be either 'int', 'bool', or 'string'.",
        ),
        (
            b'{"text_input": "a", "parameters": {"a": null}}',
            400,
            "Converting keyword: 'parameters': parameter 'a' has invalid type. It should be"
            " either 'int', 'bool', or 'string'.",
        ),
        (
            b'{"text_input": "a", "parameters": 5}',
            400,
            "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object"
            " as object",
        ),
        (
            b'{"text_input": ["a", "b"]}',
            400,
            "The schema can not convert input 'text_input' to tensor with proper shape",
        ),
        (
            b'{"text_input": 5}',
            400,
            "Unable to parse JSON bytes array: attempt to access JSON non-string as string",
        ),
        (
            b'{"text_input": "a", "max_tokens": "x"}',
            400,
            "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer",
        ),
        (
            b'{"text_input": "a", "parameters": {"text_input": "b"}}',
            400,
            "Converting keyword: 'parameters': [request id: <id_unknown>] input 'text_input'"
            " already exists in request",
        ),
    ],
)
@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_malformed_requests_get_tritons_words(
    client: httpx.Client, route: str, body: bytes, status: int, message: str
) -> None:
    reply = client.post(f"/v2/models/tokens/{route}", content=body)
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"].startswith(message)


def test_refusals_before_inference(client: httpx.Client) -> None:
    missing = client.post("/v2/models/nosuch/generate_stream", json={"text_input": "a"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "Request for unknown model: 'nosuch' is not found"}
    version = client.post("/v2/models/echo/versions/7/generate", json={"text_input": "a"})
    assert version.status_code == 404
    assert version.json() == {"error": "Request for unknown model: 'echo' version 7 is not found"}
    no_input = client.post("/v2/models/tokens/generate_stream", json={})
    assert no_input.status_code == 400 and "text_input" in no_input.json()["error"]
    assert client.get("/v2/models/tokens/generate_stream").status_code == 405
    packed = client.post(
        "/v2/models/echo/generate", content=b"{}", headers={"content-encoding": "gzip"}
    )
    assert packed.status_code == 400
    assert packed.json() == {"error": "Unsupported content-encoding, only 'identity' is supported."}


# -- generate_stream ------------------------------------------------------------------------------


def test_generate_stream_sends_each_response_as_an_event(client: httpx.Client) -> None:
    events = _events(client, "tokens", {"text_input": "the quick fox", "parameters": {"x": 1}})
    assert events == [
        {"index": i, "model_name": "tokens", "model_version": "1", "text_output": word}
        for i, word in enumerate(["the", "quick", "fox"])
    ]
    one = _events(client, "echo", {"text_input": "solo"})
    assert [e["text_output"] for e in one] == ["solo {}"]
    assert _events(client, "tokens", {"text_input": "a", "max_tokens": 0}) == []


def test_generate_stream_first_response_error_sets_the_status(client: httpx.Client) -> None:
    body = {"text_input": "a", "fail": "no"}
    with client.stream("POST", "/v2/models/tokens/generate_stream", json=body) as reply:
        assert reply.status_code == 500  # the model's error (INTERNAL), as for /infer
        assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
        text = reply.read()
    assert text == b'data: {"error":"the model refused: no"}\n\n'


def test_generate_stream_over_raw_http_is_chunked_and_keeps_the_connection(
    served: RunningServer,
) -> None:
    body = b'{"text_input": "x y"}'
    request = (
        b"POST /v2/models/tokens/generate_stream HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    host, port = served.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for _ in range(2):  # the same connection serves a second request after the stream
            sock.sendall(request)
            received = _read_until(sock, b"0\r\n\r\n")
            head, _, chunked = received.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 200 OK"
            headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
            assert headers[b"transfer-encoding"] == b"chunked"
            assert b"content-length" not in headers
            assert _dechunk(chunked) == (
                b'data: {"index":0,"model_name":"tokens","model_version":"1","text_output":"x"}'
                b"\n\n"
                b'data: {"index":1,"model_name":"tokens","model_version":"1","text_output":"y"}'
                b"\n\n"
            )


def test_http_1_0_client_gets_the_raw_stream_and_a_close(served: RunningServer) -> None:
    body = b'{"text_input": "x y"}'
    request = b"POST /v2/models/tokens/generate_stream HTTP/1.0\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )
    host, port = served.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        received = _read_until(sock, None)
    head, _, payload = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert payload.count(b"data: ") == 2 and payload.endswith(b"\n\n")


def _read_until(sock: socket.socket, end: bytes | None) -> bytes:
    """Read until ``end`` arrived (``None``: until the server closes); 30 s at most."""
    received = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if end is not None and received.endswith(end):
            return received
        data = sock.recv(65536)
        if not data:
            assert end is None, received
            return received
        received += data
    raise AssertionError(f"timed out: {received!r}")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return out
        out += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        data = rest[size + 2 :]


# -- cancellation and flow control ---------------------------------------------------------------


def _status(status_dir: Path, tag: str) -> str:
    try:
        return (status_dir / tag).read_text()
    except FileNotFoundError:
        return ""


def _wait_status(status_dir: Path, tag: str, prefix: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = _status(status_dir, tag)
        if text.startswith(prefix):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{tag}: {_status(status_dir, tag)!r}, expected {prefix!r}")


@pytest.mark.parametrize("model", ["tokens", "tokens_inproc"])
def test_client_disconnect_cancels_the_request_in_the_model(
    served: RunningServer, status_dir: Path, model: str
) -> None:
    tag = f"disconnect-{model}"
    body = {"text_input": "tick", "max_tokens": 2000, "parameters": {"delay_ms": 20, "tag": tag}}
    with (
        httpx.Client(base_url=f"http://{served.http_url}", timeout=30) as client,
        connect_sse(client, "POST", f"/v2/models/{model}/generate_stream", json=body) as source,
    ):
        events = source.iter_sse()
        assert json.loads(next(events).data)["index"] == 0
        assert json.loads(next(events).data)["index"] == 1
    # the client closed the connection: the model sees is_cancelled() and stops early
    text = _wait_status(status_dir, tag, "cancelled")
    assert int(text.split()[1]) < 2000


def _stalled_stream(served: RunningServer, model: str, tag: str) -> socket.socket:
    """A raw generate_stream of 3000 tokens of 64 KiB whose client does not read."""
    payload = json.dumps(
        {"text_input": "x", "max_tokens": 3000, "parameters": {"token_bytes": 65536, "tag": tag}}
    ).encode()
    host, port = served.http_url.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.sendall(
        b"POST /v2/models/%b/generate_stream HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (model.encode(), len(payload), payload)
    )
    return sock


def _wait_stalled(status_dir: Path, tag: str) -> int:
    """How many tokens the model sent once it stopped sending (fails if it never stops)."""
    previous = -1
    sent = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        text = _status(status_dir, tag)
        sent = int(text.split()[1]) if text else 0
        if sent == previous:
            return sent
        previous = sent
    raise AssertionError(f"the model never stalled ({sent} tokens sent)")


@pytest.mark.parametrize("model", ["tokens", "tokens_inproc"])
def test_disconnect_lets_a_held_model_go_and_cancels(
    served: RunningServer, status_dir: Path, model: str
) -> None:
    """A model held by a client that stopped reading is let go at once when the client goes,
    and sees is_cancelled() (in a model process too: the held sender is released)."""
    tag = f"stalled-disconnect-{model}"
    with _stalled_stream(served, model, tag) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sent = _wait_stalled(status_dir, tag)
        assert 0 < sent < 1000
    text = _wait_status(status_dir, tag, "cancelled")
    assert int(text.split()[1]) < 1000


@pytest.mark.parametrize("model", ["tokens", "tokens_inproc"])
def test_slow_reader_holds_the_model(served: RunningServer, status_dir: Path, model: str) -> None:
    """A client that stops reading stops the model's sending thread after a bounded number of
    tokens (unread responses plus the sockets' buffers), instead of the server buffering all
    3000 tokens of 64 KiB (192 MiB): in-process by the bounded channel, in a model process
    (the default) by the credit the server gives as the frontend takes responses."""
    tag = f"slow-reader-{model}"
    with _stalled_stream(served, model, tag) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        # stop reading: the model must come to a halt well short of 3000 tokens
        sent = _wait_stalled(status_dir, tag)
        assert 0 < sent < 1000
        assert _status(status_dir, tag).startswith("sent")
        # reading again lets it go on (polled: on a loaded machine the model takes a moment)
        deadline = time.monotonic() + 30
        while int(_status(status_dir, tag).split()[1]) <= sent:
            assert time.monotonic() < deadline, "the model did not go on"
            sock.recv(1 << 20)
    # closing the connection cancels it
    _wait_status(status_dir, tag, "cancelled")


def test_unloading_lets_a_held_model_process_go(tmp_path: Path) -> None:
    """A model process held by a client that does not read does not hold up the unload: once
    the drain is over its stream is cancelled (the model sees is_cancelled()) and ended."""
    repository, status = tmp_path / "models", tmp_path / "status"
    status.mkdir()
    config = TOKENS_CONFIG.format(status=status, extra="")
    write_model(repository, "tokens", config, files={"1/model.py": TOKENS_MODEL})
    with ServerThread(
        repository,
        grpc_port=None,
        metrics_port=None,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["tokens"],
        exit_timeout_secs=1.0,
    ) as running:
        tag = "unload-held"
        with _stalled_stream(running, "tokens", tag) as sock:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            assert 0 < _wait_stalled(status, tag) < 1000
            with httpx.Client(base_url=f"http://{running.http_url}", timeout=60) as client:
                answer = client.post("/v2/repository/models/tokens/unload")
                assert answer.status_code == 200
                text = _wait_status(status, tag, "cancelled")
                assert int(text.split()[1]) < 1000
                deadline = time.monotonic() + 60
                while client.get("/v2/models/tokens/ready").status_code == 200:
                    assert time.monotonic() < deadline, "the model never unloaded"
                    time.sleep(0.1)
