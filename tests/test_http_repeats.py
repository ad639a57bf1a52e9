"""What the HTTP frontend remembers of repeated requests must change nothing but its cost.

A read that parsed to one whole request is reused when the next read has the same bytes but for
the body (the reader's shortcut); a reply header made for a decode plan is reused when the next
response has the same outputs (names, dtypes, shapes); an infer path is routed once. Each is
checked here against the full work, on the answers and on the cases that must not be reused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from kernel_test_backends.configs import ADDSUB, IDENTITY

from kernel._inference import InferenceResponse
from kernel.frontends._http._infer import DecodePlans, decode_request, encode_response
from kernel.frontends._http_server._reader import Received, Refusal, RequestReader
from kernel.frontends._http_server._types import HttpLimits
from kernel.testing import RunningServer, ServerThread, write_model

LIMITS = HttpLimits(max_body=4096, max_url=256, max_header_bytes=1024, max_headers=8)

INFER = (
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 2\r\n"
    b"Content-Length: %d\r\n\r\n"
)


def _summary(events: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, Received):
            r = event.request
            out.append(
                (r.method, r.path, r.headers, bytes(r.body), event.keep_alive, event.head,
                 event.http10)
            )  # fmt: skip
        elif isinstance(event, Refusal):
            out.append(("refusal", event.reply.status, bytes(event.reply.body[0])))
        else:
            out.append(("continue",))
    return out


def _fresh(read: bytes) -> list[tuple[Any, ...]]:
    """What a reader that never saw a request before makes of ``read``."""
    return _summary(RequestReader(LIMITS).feed(read, 0.0))


READS = [
    INFER % 6 + b"{}abcd",
    INFER % 6 + b"{}wxyz",  # same head, new body: the shortcut
    INFER % 6 + b"{}wxyz",
    INFER % 7 + b"{}abcde",  # another length: parsed again
    INFER % 7 + b"{}abcdf",
    b"GET /v2/health/ready HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /v2/health/ready HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"HEAD /v2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"HEAD /v2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\n\r\n",  # no Content-Length: not remembered
    b"GET /v2 HTTP/1.1\r\n\r\n",
    b"\r\nGET /v2 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",  # a leading blank line
    b"\r\nGET /v2 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    INFER % 6 + b"{}abcd",
    INFER % 6 + b"{}abcd" + INFER % 6 + b"{}abcd",  # pipelined: parsed
    INFER % 6 + b"{}abcd",
    INFER % 6 + b"{}\r\n\r\n",  # a body that looks like a blank line
    INFER % 6 + b"{}\r\n\r\n",
]


def test_a_repeated_read_comes_out_as_a_fresh_parse_makes_it() -> None:
    reader = RequestReader(LIMITS)
    for read in READS:
        events = reader.feed(read, 0.0)
        assert _summary(events) == _fresh(read), read
    assert not reader.in_message


def test_a_repeated_read_gets_its_own_headers_and_body() -> None:
    reader = RequestReader(LIMITS)
    [first] = reader.feed(INFER % 6 + b"{}abcd", 0.0)
    [second] = reader.feed(INFER % 6 + b"{}wxyz", 0.0)
    assert isinstance(first, Received) and isinstance(second, Received)
    second.request.headers["added"] = "by the app"
    [third] = reader.feed(INFER % 6 + b"{}wxyz", 0.0)
    assert isinstance(third, Received)
    assert "added" not in third.request.headers
    assert third.request.headers == first.request.headers
    assert third.request.body == b"{}wxyz"
    assert type(third.request.body) is bytes
    assert reader._repeat is not None  # the shortcut answered


@pytest.mark.parametrize(
    "read",
    [
        b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ],
)
def test_reads_that_end_a_connection_or_need_more_are_parsed_every_time(read: bytes) -> None:
    reader = RequestReader(LIMITS)
    first = _summary(reader.feed(read, 0.0))
    assert first == _fresh(read)
    [keep_alive] = [summary[4] for summary in first if len(summary) == 7]
    if keep_alive:  # still keep-alive (Expect, chunked): the next read is parsed in full
        assert _summary(reader.feed(read, 0.0)) == first
    else:  # llhttp refuses what follows a final request; so does the reader
        assert _summary(reader.feed(read, 0.0)) != first


def test_a_read_after_a_partial_one_is_parsed() -> None:
    reader = RequestReader(LIMITS)
    read = INFER % 6 + b"{}abcd"
    reader.feed(read, 0.0)
    assert reader.feed(read[:10], 0.0) == []
    assert reader.in_message
    # the rest of the first request, then a repeat of a whole one, in one read
    events = reader.feed(read[10:] + read, 0.0)
    assert _summary(events) == _fresh(read) * 2


def test_a_refused_read_is_refused_again() -> None:
    read = b"POST / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(9))
    read += b"Content-Length: 0\r\n\r\n"
    reader = RequestReader(LIMITS)
    [refusal] = reader.feed(read, 0.0)
    assert isinstance(refusal, Refusal) and refusal.reply.status == 431
    assert reader.feed(read, 0.0) == []  # nothing after a refusal


# -- reply headers made once per plan -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root: Path = tmp_path_factory.mktemp("models")
    write_model(root, "addsub", ADDSUB)
    write_model(root, "other", ADDSUB)
    with ServerThread(root, grpc_port=None, metrics_port=None) as running:
        yield running


def _body(
    outputs: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> tuple[memoryview, int]:
    header: dict[str, Any] = {
        "inputs": [
            {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4],
             "parameters": {"binary_data_size": 16}}
            for i in (0, 1)
        ],
        "outputs": outputs,
        **(extra or {}),
    }  # fmt: skip
    text = json.dumps(header).encode()
    return memoryview(text + np.arange(8, dtype=np.float32).tobytes()), len(text)


BINARY = [{"name": n, "parameters": {"binary_data": True}} for n in ("OUTPUT0", "OUTPUT1")]

RESPONSES: list[dict[str, Any]] = [
    {"OUTPUT0": np.arange(4, dtype=np.float32), "OUTPUT1": np.ones(4, dtype=np.float32)},
    {"OUTPUT0": np.arange(4, dtype=np.float32) * 3, "OUTPUT1": np.zeros(4, dtype=np.float32)},
    {"OUTPUT0": np.arange(6, dtype=np.float32), "OUTPUT1": np.ones(4, dtype=np.float32)},
    {"OUTPUT0": np.arange(4, dtype=np.int64), "OUTPUT1": np.ones(4, dtype=np.float32)},
    {"OUTPUT0": np.arange(4, dtype=">f4"), "OUTPUT1": np.ones(4, dtype=np.float32)},
    {"OUTPUT0": np.arange(8, dtype=np.float32)[::2], "OUTPUT1": np.ones((2, 2), np.float32).T},
    {"OUTPUT0": np.arange(8, dtype=np.float32)[::2], "OUTPUT1": np.ones((2, 2), np.float32).T},
    {"OUTPUT0": np.arange(4).astype(ml_dtypes.bfloat16), "OUTPUT1": np.ones(0, np.float32)},
    {"OUTPUT0": np.arange(4).astype(ml_dtypes.bfloat16), "OUTPUT1": np.ones(0, np.float32)},
    {"OUTPUT0": np.array([b"a", b"bc"], dtype=np.object_), "OUTPUT1": np.ones(4, np.float32)},
    {"OUTPUT0": np.array([b"ab", b"c"], dtype=np.object_), "OUTPUT1": np.ones(4, np.float32)},
    {"OUTPUT1": np.ones(4, dtype=np.float32), "OUTPUT0": np.arange(4, dtype=np.float32)},
    {"OUTPUT0": np.array(2.5, dtype=np.float32), "OUTPUT1": np.ones(4, dtype=np.float32)},
    {"OUTPUT0": np.array(2.5, dtype=np.float32), "OUTPUT1": np.ones(4, dtype=np.float32)},
    # larger than the small-copy size: C-ordered (a view) and not (a copy)
    {"OUTPUT0": np.arange(3000, dtype=np.float32), "OUTPUT1": np.arange(1600.0).reshape(40, 40).T},
    {"OUTPUT0": np.arange(3000, dtype=np.float32) * 2, "OUTPUT1": np.ones((40, 40)).T},
]


def _encoded(server: RunningServer, model: str, body: memoryview, length: int,
             plans: DecodePlans | None, outputs: dict[str, Any],
             parameters: dict[str, Any] | None = None) -> tuple[bytes, list[bytes]]:  # fmt: skip
    call = decode_request(server.server, model, "", body, length, plans)
    response = InferenceResponse(outputs=outputs, parameters=parameters or {})
    header, buffers = encode_response(call, response, server.server.shared_memory)
    return header, [bytes(b) for b in buffers]


@pytest.mark.parametrize(
    "outputs",
    [
        BINARY,
        [],  # the request's default (JSON)
        [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],  # OUTPUT1 in JSON
        [
            {"name": n, "parameters": {"binary_data": True, "classification": 2}}
            for n in ("OUTPUT0", "OUTPUT1")
        ],
    ],
)
def test_a_planned_reply_header_is_the_header_a_full_encoding_makes(
    server: RunningServer, outputs: list[dict[str, Any]]
) -> None:
    plans = DecodePlans()
    body, length = _body(
        outputs, {"parameters": {"binary_data_output": True}} if not outputs else None
    )
    for model in ("addsub", "other", "addsub"):
        for arrays in RESPONSES:
            if (
                outputs
                and "classification" in json.dumps(outputs)
                and arrays["OUTPUT0"].dtype.kind == "O"
            ):
                continue  # classification of strings is refused either way
            try:
                full = _encoded(server, model, body, length, None, arrays)
            except Exception as exc:  # the same error must come out
                with pytest.raises(type(exc)):
                    _encoded(server, model, body, length, plans, arrays)
                continue
            assert _encoded(server, model, body, length, plans, arrays) == full
            parameters = {"p": 1}
            assert _encoded(server, model, body, length, plans, arrays, parameters) == (
                _encoded(server, model, body, length, None, arrays, parameters)
            )
    [plan] = plans._plans.values()
    # a template only when every output goes back in binary, unclassified
    assert bool(plan.reply) == (outputs is BINARY or not outputs)


def test_the_infer_reply_over_http_is_unchanged_when_repeated(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        replies = []
        for n in range(4):
            inputs = [httpclient.InferInput(f"INPUT{i}", [4], "FP32") for i in (0, 1)]
            inputs[0].set_data_from_numpy(np.arange(4, dtype=np.float32) * n)
            inputs[1].set_data_from_numpy(np.ones(4, dtype=np.float32))
            wanted = [
                httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=True) for i in (0, 1)
            ]
            result = client.infer("addsub", inputs, outputs=wanted)
            replies.append(
                (result.get_response(), result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))
            )
        for n, (response, out0, out1) in enumerate(replies):
            assert response == replies[0][0]
            np.testing.assert_array_equal(out0, np.arange(4, dtype=np.float32) * n + 1)
            np.testing.assert_array_equal(out1, np.arange(4, dtype=np.float32) * n - 1)
        # a GET on a remembered infer path is still refused, and other routes still answer
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{server.http_url}/v2/models/addsub/infer", timeout=10)
        info.value.close()
        assert info.value.code == 405
        assert info.value.headers["allow"] == "POST"
        assert client.is_model_ready("addsub")
    finally:
        client.close()


# -- large tensors (issue 22): one body buffer, inputs as views of it, outputs as they are -----


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root: Path = tmp_path_factory.mktemp("identity")
    write_model(root, "identity", IDENTITY)
    with ServerThread(root, grpc_port=None, metrics_port=None) as running:
        yield running


def _large_body(values: np.ndarray) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "shape": [values.size],
                 "parameters": {"binary_data_size": values.nbytes}}
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    return header + values.tobytes(), len(header)


@pytest.mark.parametrize("pieces", [1, 4])
def test_a_large_binary_input_is_a_view_of_the_one_body_buffer(
    identity: RunningServer, pieces: int
) -> None:
    values = np.arange(3 * 128 * 128, dtype=np.float32)  # 196 KB
    body, length = _large_body(values)
    head = b"POST /v2/models/identity/infer HTTP/1.1\r\nInference-Header-Content-Length: %d\r\n"
    head += b"Content-Length: %d\r\n\r\n"
    read = head % (length, len(body)) + body
    reader = RequestReader(HttpLimits())
    step = -(-len(read) // pieces)
    events: list[Any] = []
    for start in range(0, len(read), step):
        events += reader.feed(read[start : start + step], 0.0)
    [received] = events
    request_body = received.request.body
    assert bytes(request_body) == body
    for plans in (None, DecodePlans(), DecodePlans()):
        for _ in range(2):  # the second time from the plan, where there is one
            call = decode_request(
                identity.server, "identity", "", memoryview(request_body), length, plans
            )
            array = call.request.inputs["INPUT0"]
            np.testing.assert_array_equal(array, values)
            assert np.shares_memory(array, np.frombuffer(request_body, np.uint8))


def test_a_large_output_arrives_whole(identity: RunningServer) -> None:
    client = httpclient.InferenceServerClient(identity.http_url)
    try:
        for size in (1000, 3 * 128 * 128, 200_000):  # under and over the one-write limit
            values = np.random.default_rng(size).random(size, dtype=np.float32)
            tensor = httpclient.InferInput("INPUT0", [size], "FP32")
            tensor.set_data_from_numpy(values)
            for binary in (True, False):
                wanted = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
                result = client.infer("identity", [tensor], outputs=wanted)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
    finally:
        client.close()
