"""The gRPC layer (``kernel.frontends._grpc._rpc``) on a recording stand-in for the HTTP/2 core.

Flow-control credit follows the handler (a queued streaming message is credited when read, a
message being assembled as it arrives), the length prefix is checked before anything is
buffered, and requests that are not gRPC get grpc's HTTP answers.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import hpack
from grpclib.const import Cardinality

from kernel.frontends._grpc._rpc import Method, Stream, refusal
from kernel.frontends._grpc._wire import timeout_seconds


class _Core:
    def __init__(self) -> None:
        self.consumed = 0
        self.blocks: list[bytes] = []

    def consume(self, stream_id: int, size: int) -> None:
        self.consumed += size

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        self.blocks.append(block)

    def send_unary(self, stream_id: int, head: bytes, data: bytes, tail: bytes) -> bool:
        self.blocks.append(data)
        return True

    def pending(self, stream_id: int) -> bool:
        return False


class _Link:
    def __init__(self, limit: int = 1 << 20) -> None:
        self.core = _Core()
        self.max_message_bytes = limit

    def consume(self, stream_id: int, size: int) -> None:
        self.core.consume(stream_id, size)

    def answered(self, rpc: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _framed(message: bytes) -> bytes:
    return struct.pack(">BL", 0, len(message)) + message


def _stream(link: _Link, cardinality: Cardinality, handler: Any = None) -> Stream:
    async def idle(stream: Stream) -> None:
        await asyncio.sleep(3600)

    method = Method(handler or idle, cardinality, bytes, bytes)
    return Stream(link, 1, method)  # type: ignore[arg-type]


def _status(block: bytes) -> dict[bytes, bytes]:
    return dict(hpack.Decoder().decode(block, raw=True))


async def test_streaming_messages_are_credited_when_read() -> None:
    link = _Link()
    stream = _stream(link, Cardinality.STREAM_STREAM)
    stream.start({}, False)
    try:
        wire = _framed(b"a" * 100) + _framed(b"b" * 200)
        stream.data(memoryview(wire), False)
        assert link.core.consumed == 0  # whole messages wait for the handler
        assert await stream.recv_message() == b"a" * 100
        assert link.core.consumed == 105
        assert await stream.recv_message() == b"b" * 200
        assert link.core.consumed == len(wire)
    finally:
        assert stream.task is not None
        stream.task.cancel()


async def test_a_message_being_assembled_is_credited_as_it_arrives() -> None:
    link = _Link()
    stream = _stream(link, Cardinality.STREAM_STREAM)
    stream.start({}, False)
    try:
        wire = _framed(b"x" * 10_000)
        stream.data(memoryview(wire[:4000]), False)
        stream.data(memoryview(wire[4000:8000]), False)
        assert link.core.consumed == 8000  # else a message larger than the window never ends
        stream.data(memoryview(wire[8000:]), False)
        assert link.core.consumed == 8000  # the rest arrived with the whole message: held
        assert await stream.recv_message() == b"x" * 10_000
        assert link.core.consumed == len(wire)
    finally:
        assert stream.task is not None
        stream.task.cancel()


async def test_unary_request_is_credited_at_once() -> None:
    link = _Link()
    received: list[bytes] = []

    async def echo(stream: Stream) -> None:
        received.append(await stream.recv_message())
        await stream.send_message(b"ok")

    stream = _stream(link, Cardinality.UNARY_UNARY, echo)
    stream.start({}, False)
    stream.data(memoryview(_framed(b"q" * 50)), True)
    assert link.core.consumed == 55
    assert stream.task is not None
    await asyncio.wait_for(stream.task, 5)
    assert received == [b"q" * 50]
    assert link.core.blocks == [_framed(b"ok")]


def test_a_message_over_the_limit_is_refused_from_its_prefix() -> None:
    link = _Link(limit=1000)
    stream = _stream(link, Cardinality.STREAM_STREAM)
    stream.data(memoryview(struct.pack(">BL", 0, 1001) + b"x" * 10), False)
    assert stream._partial_size == 0  # nothing of it was kept
    status = _status(link.core.blocks[0])
    assert status[b"grpc-status"] == b"8"
    assert b"1001 vs. 1000" in status[b"grpc-message"]


def test_compressed_message_with_an_unknown_encoding() -> None:
    link = _Link()
    stream = _stream(link, Cardinality.STREAM_STREAM)
    stream._encoding = b"snappy"
    stream.data(memoryview(struct.pack(">BL", 1, 3) + b"abc"), False)
    assert _status(link.core.blocks[0])[b"grpc-status"] == b"12"  # UNIMPLEMENTED


def test_requests_that_are_not_grpc() -> None:
    post = {b":method": b"POST"}
    assert refusal({**post, b"content-type": b"application/grpc"}) is None
    assert refusal({**post, b"content-type": b"application/grpc+proto"}) is None
    for fields, code in (
        ({**post, b"content-type": b"application/json"}, b"415"),
        (post, b"415"),
        ({b":method": b"GET", b"content-type": b"application/grpc"}, b"405"),
    ):
        block = refusal(fields)
        assert block is not None
        assert _status(block)[b":status"] == code


def test_grpc_timeout_values() -> None:
    assert timeout_seconds(b"100m") == 0.1
    assert timeout_seconds(b"99999999S") == 99999999.0  # 8 digits at most
    assert timeout_seconds(b"999999999S") is None
    assert timeout_seconds(b"1" * 5000 + b"S") is None  # never parsed as an integer
    assert timeout_seconds(b"5x") is None
