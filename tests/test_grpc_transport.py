"""The kernel's HTTP/2 transport for gRPC (``kernel.frontends._grpc._server`` and the layers under
it), seen by real clients.

The rpcs themselves are covered by ``test_grpc_frontend.py`` and ``test_grpc_errors.py``; these
tests aim at the transport: messages larger than every flow-control window in both directions,
compressed requests, deadlines, cancelled calls, unknown methods, many calls on one connection,
and bytes that are not HTTP/2 at all. The header decoder is checked against the ``hpack``
package's encoder, Huffman coding and dynamic table included.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_test_backends.configs import IDENTITY
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode
from kernel.frontends._grpc._hpack import Decoder, HpackError, encode
from kernel.testing import RunningServer, ServerThread, write_model

SLEEPY = IDENTITY.replace('"identity"', '"sleep"') + (
    'parameters { key: "sleep_ms" value { string_value: "500" } }'
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("transport_models")
    write_model(repo, "identity", IDENTITY)
    write_model(repo, "sleepy", SLEEPY)
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        yield srv


@pytest.fixture
def client(served: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(served.grpc_url)
    yield c
    c.close()


def _input(values: np.ndarray[Any, Any]) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return [tensor]


def test_messages_larger_than_every_window(client: grpcclient.InferenceServerClient) -> None:
    """48 MB each way: many DATA frames, window updates from both sides."""
    values = np.random.default_rng(0).random(12 * 1024 * 1024, dtype=np.float32)
    result = client.infer("identity", _input(values))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


def test_large_messages_on_a_stream(client: grpcclient.InferenceServerClient) -> None:
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        sent = [np.full(2 * 1024 * 1024, i, dtype=np.float32) for i in range(4)]
        for i, values in enumerate(sent):
            client.async_stream_infer("identity", _input(values), request_id=str(i))
        received = {}
        for _ in sent:
            result, error = results.get(timeout=60)
            assert error is None
            received[result.get_response().id] = result.as_numpy("OUTPUT0")
        for i, values in enumerate(sent):
            np.testing.assert_array_equal(received[str(i)], values)
    finally:
        client.stop_stream()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: grpcclient.InferenceServerClient, algorithm: str) -> None:
    values = np.zeros(100_000, dtype=np.float32)  # compresses well
    result = client.infer("identity", _input(values), compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


def test_deadline_exceeded_and_the_server_carries_on(
    client: grpcclient.InferenceServerClient,
) -> None:
    values = np.ones(4, dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("sleepy", _input(values), client_timeout=0.1)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    np.testing.assert_array_equal(
        client.infer("identity", _input(values)).as_numpy("OUTPUT0"), values
    )


def test_cancelled_call_cancels_the_request(served: RunningServer) -> None:
    channel = grpc.insecure_channel(served.grpc_url)
    try:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="sleepy")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
        request.raw_input_contents.append(np.ones(1, dtype=np.float32).tobytes())
        version = served.server.route("sleepy")
        call = stub.ModelInfer.future(request)
        for _ in range(500):  # bounded: until the request reached the model
            if version.in_flight:
                break
            time.sleep(0.01)
        assert version.in_flight == 1
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
        for _ in range(500):  # bounded: until the server let go of it
            if not version.in_flight:
                break
            time.sleep(0.01)
        assert version.in_flight == 0
    finally:
        channel.close()


def test_unknown_method(served: RunningServer) -> None:
    with grpc.insecure_channel(served.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/NoSuchRpc")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert not info.value.details()  # Triton 2.51 answers an unknown rpc without a message


def test_many_concurrent_calls_on_one_connection(client: grpcclient.InferenceServerClient) -> None:
    def one(i: int) -> None:
        values = np.full(64, i, dtype=np.float32)
        np.testing.assert_array_equal(
            client.infer("identity", _input(values)).as_numpy("OUTPUT0"), values
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(400)))


def test_liveness_answers_while_inference_saturates(
    served: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    values = np.ones(4, dtype=np.float32)
    version = served.server.route("sleepy")
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(client.infer, "sleepy", _input(values)) for _ in range(4)]
        for _ in range(500):  # bounded: until the one instance is busy
            if version.executing:
                break
            time.sleep(0.01)
        for _ in range(5):
            assert client.is_server_live()
            assert client.is_server_ready()
        # four requests on one instance sleeping 500 ms each cannot all be done yet
        assert not all(call.done() for call in calls)
        for call in calls:
            np.testing.assert_array_equal(call.result(timeout=60).as_numpy("OUTPUT0"), values)


def test_liveness_answers_while_a_model_loads(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "slow_load",
        IDENTITY + 'parameters { key: "init_sleep_ms" value { string_value: "1500" } }',
    )
    with ServerThread(
        tmp_path, http_port=None, metrics_port=None, model_control_mode=ModelControlMode.EXPLICIT
    ) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            loading = threading.Thread(target=client.load_model, args=("slow_load",))
            loading.start()
            states: set[str] = set()
            for _ in range(500):  # bounded: until the load is under way
                index = client.get_model_repository_index(as_json=True).get("models", [])
                states = {m.get("state", "") for m in index}
                if "LOADING" in states:
                    break
                time.sleep(0.01)
            assert "LOADING" in states
            for _ in range(5):
                assert client.is_server_live()
            assert not client.is_model_ready("slow_load")
            loading.join(timeout=60)
            assert client.is_model_ready("slow_load")
        finally:
            client.close()


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1),  # not the preface: PROTOCOL_ERROR
        (_PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01", 6),  # FRAME_SIZE_ERROR
        (_PREFACE + b"\x00\x00\x02\x01\x05\x00\x00\x00\x01\xbf\xff", 9),  # COMPRESSION_ERROR
        (  # headers that never end: ENHANCE_YOUR_CALM
            _PREFACE
            + b"\x00\x00\x00\x01\x00\x00\x00\x00\x01"
            + 2 * (b"\x00\xfd\xe8\x09\x00\x00\x00\x00\x01" + bytes(65000)),
            11,
        ),
    ],
)
def test_garbage_closes_only_that_connection(
    served: RunningServer, client: grpcclient.InferenceServerClient, garbage: bytes, code: int
) -> None:
    host, port = served.grpc_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(garbage)
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection: recv ends
            received += chunk
    frames = []
    while len(received) >= 9:
        length = int.from_bytes(received[:3], "big")
        frames.append((received[3], received[9 : 9 + length]))
        received = received[9 + length :]
    kind, payload = frames[-1]
    assert kind == 7  # GOAWAY
    assert int.from_bytes(payload[4:8], "big") == code
    assert client.is_server_live()


def test_stop_sends_goaway_and_waits_for_calls(tmp_path: Path) -> None:
    write_model(tmp_path, "sleepy", SLEEPY)
    thread = ServerThread(tmp_path, http_port=None, metrics_port=None)
    with thread as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        values = np.ones(4, dtype=np.float32)
        outcome: list[Any] = []
        worker = threading.Thread(
            target=lambda: outcome.append(client.infer("sleepy", _input(values)))
        )
        worker.start()
        version = srv.server.route("sleepy")
        for _ in range(500):
            if version.in_flight:
                break
            time.sleep(0.01)
        thread.stop()  # drains: the call in flight is answered
        worker.join(timeout=60)
        np.testing.assert_array_equal(outcome[0].as_numpy("OUTPUT0"), values)
        client.close()


# -- the header decoder -------------------------------------------------------------------------

_names = st.sampled_from(
    [b":path", b"content-type", b"te", b"grpc-timeout", b"x-custom", b"user-agent"]
)
_values = st.binary(min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(_names, _values), max_size=8), min_size=1, max_size=6))
def test_decoder_agrees_with_hpack(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    encoder, decoder = hpack.Encoder(), Decoder()
    encoder.header_table_size = 256  # small: forces table size updates and evictions
    for fields in blocks:
        assert decoder.decode(encoder.encode(fields)) == fields


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=8))
def test_our_blocks_decode_with_hpack(fields: list[tuple[bytes, bytes]]) -> None:
    assert hpack.Decoder().decode(encode(fields), raw=True) == fields


@pytest.mark.parametrize(
    "block", [b"\x80", b"\xff\xff\xff\xff\xff\xff\x7f", b"\x40\x85ab", b"\xbf"]
)
def test_decoder_refuses_malformed_blocks(block: bytes) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block)


def test_stop_with_a_stream_left_open(tmp_path: Path) -> None:
    """A client that keeps ModelStreamInfer open does not hold up a stop."""
    write_model(tmp_path, "identity", IDENTITY)
    thread = ServerThread(tmp_path, http_port=None, metrics_port=None)
    with thread as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        results: queue.Queue[Any] = queue.Queue()
        client.start_stream(callback=lambda result, error: results.put(error))
        try:
            client.async_stream_infer("identity", _input(np.ones(4, dtype=np.float32)))
            assert results.get(timeout=30) is None
            thread.stop()  # raises if the server is still running after 60 s
        finally:
            client.stop_stream()
            client.close()


def test_compressed_request_over_the_limit_once_inflated(tmp_path: Path) -> None:
    """The size limit applies to the inflated message: a small gzip body cannot smuggle a big
    one in (it is inflated off the event loop, never beyond the limit)."""
    write_model(tmp_path, "identity", IDENTITY)
    with ServerThread(
        tmp_path, http_port=None, metrics_port=None, grpc_max_message_bytes=10_000
    ) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            small = np.zeros(100, dtype=np.float32)
            result = client.infer("identity", _input(small), compression_algorithm="gzip")
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), small)
            with pytest.raises(InferenceServerException) as info:
                client.infer(
                    "identity",
                    _input(np.zeros(100_000, dtype=np.float32)),  # ~400 KB, compresses to ~1 KB
                    compression_algorithm="gzip",
                )
            assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert "Received message larger than max" in str(info.value.message())
            assert client.is_server_live()
        finally:
            client.close()
