"""Large ModelInfer messages (issue 22): a 196 KB request arrives in many DATA frames; its bytes
are assembled once and its raw input contents reach the tensors as views of them, and the answers
are those the protobuf runtime gives for the same bytes, whatever the frames' sizes.

The gRPC layer is fed the framed message cut into frames of several sizes (no sockets), and a
real server answers tritonclient's large requests, unary and on a stream, with large outputs.
"""

from __future__ import annotations

import asyncio
import queue
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpclib.const import Cardinality

from kernel.frontends._grpc._messages import InferRequestPb, InferRequestReader
from kernel.frontends._grpc._rpc import Method, Stream
from kernel.testing import RunningServer, ServerThread, write_model

IMAGE = np.arange(3 * 128 * 128, dtype=np.float32).reshape(1, 3, 128, 128) / 7


def _request(request_id: str = "r1") -> Any:
    message = InferRequestPb(model_name="large", id=request_id)
    message.parameters["priority"].int64_param = 2
    message.inputs.add(name="IMAGE", datatype="FP32", shape=IMAGE.shape)
    message.inputs.add(name="SMALL", datatype="INT32", shape=[3])
    message.outputs.add(name="OUT")
    message.raw_input_contents.append(IMAGE.tobytes())
    message.raw_input_contents.append(np.array([1, 2, 3], dtype=np.int32).tobytes())
    return message


def _framed(body: bytes) -> bytes:
    return struct.pack(">BL", 0, len(body)) + body


class _Core:
    def __init__(self) -> None:
        self.consumed = 0

    def consume(self, stream_id: int, size: int) -> None:
        self.consumed += size

    def pending(self, stream_id: int) -> bool:
        return False


class _Link:
    def __init__(self) -> None:
        self.core = _Core()
        self.max_message_bytes = 1 << 30

    def consume(self, stream_id: int, size: int) -> None:
        self.core.consume(stream_id, size)

    def answered(self, rpc: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _same(parsed: Any, expected: Any) -> None:
    for field in ("model_name", "model_version", "id", "parameters", "inputs", "outputs"):
        assert getattr(parsed, field) == getattr(expected, field), field
    assert [bytes(r) for r in parsed.raw_input_contents] == list(expected.raw_input_contents)


async def _receive(cardinality: Cardinality, wire: bytes, frame: int) -> tuple[list[Any], int]:
    """The messages a stream reassembles from ``wire`` cut in ``frame``-byte DATA frames, and
    the bytes credited back to the client."""

    async def idle(stream: Stream) -> None:
        await asyncio.sleep(3600)

    link = _Link()
    method = Method(idle, cardinality, InferRequestReader.FromString, bytes)
    stream = Stream(link, 1, method)  # type: ignore[arg-type]
    stream.start({}, False)
    view = memoryview(wire)
    for start in range(0, len(wire), frame):
        stream.data(view[start : start + frame], start + frame >= len(wire))
    messages = []
    try:
        if cardinality is Cardinality.UNARY_UNARY:
            messages.append(await stream.recv_message())
        else:
            while (message := await stream.recv_message()) is not None:
                messages.append(message)
    finally:
        if stream.task is not None:
            stream.task.cancel()
    return messages, link.core.consumed


@pytest.mark.parametrize("frame", [1000, 12345, 16384, 65536, 1 << 20])
async def test_a_large_request_in_frames_of_any_size(frame: int) -> None:
    expected = _request()
    body = expected.SerializeToString()
    (parsed,), _ = await _receive(Cardinality.UNARY_UNARY, _framed(body), frame)
    _same(parsed, expected)
    image, small = parsed.raw_input_contents
    assert isinstance(image, memoryview) and image.readonly  # a view: no copy of its own
    array = np.frombuffer(image, dtype=np.float32).reshape(IMAGE.shape)
    np.testing.assert_array_equal(array, IMAGE)
    assert bytes(small) == np.array([1, 2, 3], dtype=np.int32).tobytes()


@pytest.mark.parametrize("frame", [777, 16384, 100_000, 1 << 20])
async def test_large_and_small_messages_on_a_stream(frame: int) -> None:
    sent = [_request("a"), InferRequestPb(model_name="small", id="b"), _request("c")]
    wire = b"".join(_framed(m.SerializeToString()) for m in sent)
    received, credited = await _receive(Cardinality.STREAM_STREAM, wire, frame)
    assert len(received) == 3
    for parsed, expected in zip(received, sent, strict=True):
        _same(parsed, expected)
    assert credited == len(wire)  # every byte credited back once the messages were read


def test_a_large_malformed_or_unusual_message_is_read_as_the_runtime_reads_it() -> None:
    body = _request().SerializeToString()
    with pytest.raises(Exception) as raised:
        InferRequestReader.FromString(body[:-10])  # cut short
    with pytest.raises(type(raised.value)):
        InferRequestPb.FromString(body[:-10])
    no_raw = InferRequestPb(model_name="m", id="x" * 100_000).SerializeToString()
    _same(InferRequestReader.FromString(no_raw), InferRequestPb.FromString(no_raw))


IDENTITY = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1, -1, -1, -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1, -1, -1, -1 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("large_models")
    write_model(repo, "identity", IDENTITY)
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        yield srv


def _inputs(values: np.ndarray[Any, Any]) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return [tensor]


def test_large_requests_and_replies_with_tritonclient(served: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(served.grpc_url)
    try:
        for n in range(4):
            values = IMAGE * (n + 1)
            result = client.infer("identity", _inputs(values), request_id=str(n))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
            assert result.get_response().id == str(n)
        huge = np.repeat(IMAGE, 8, axis=0)  # 1.5 MB: more than a window in each direction
        result = client.infer("identity", _inputs(huge))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), huge)
    finally:
        client.close()


def test_large_requests_on_a_stream_with_tritonclient(served: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(served.grpc_url)
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for n in range(3):
            client.async_stream_infer("identity", _inputs(IMAGE + n), request_id=str(n))
        answers = {}
        for _ in range(3):
            result, error = results.get(timeout=30)
            assert error is None
            answers[result.get_response().id] = result.as_numpy("OUTPUT0")
        for n in range(3):
            np.testing.assert_array_equal(answers[str(n)], IMAGE + n)
    finally:
        client.stop_stream()
        client.close()
