"""Property-based tests of the gRPC transport: the HTTP/2 core, the HPACK decoder, gRPC messages.

Invariants: nothing escapes but the defined outcomes (events, GOAWAY, ``HpackError``, a refused
rpc), every buffer stays within its limit, and what the core writes parses as HTTP/2 frames.
``KERNEL_FUZZ_EXAMPLES`` sets the examples per test (small by default, so the suite stays quick;
``bench/fuzz.py`` runs them longer).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import hpack
from grpclib.const import Cardinality
from hyperframe.frame import Frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.frontends._grpc._connection import Connection
from kernel.frontends._grpc._hpack import Decoder, HpackError
from kernel.frontends._grpc._limits import Http2Limits
from kernel.frontends._grpc._rpc import Method, Stream
from kernel.frontends._grpc._wire import PREFACE, frame

EXAMPLES = int(os.environ.get("KERNEL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = Http2Limits(
    max_concurrent_streams=4,
    max_header_list_size=512,
    max_header_block=2048,
    max_frame_size=1 << 14,
    stream_window=1 << 15,
    connection_window=1 << 16,
    recently_closed=8,
    reset_burst=20,
    idle_frame_burst=50,
)
REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/s/m"),
    (":authority", "a"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class Sink:
    """Accepts every event; answers some requests at once, as an application may."""

    def __init__(self) -> None:
        self.core: Connection | None = None
        self.events = 0
        self.ended = False

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.events += 1
        assert self.core is not None
        assert self.core.open_streams <= LIMITS.max_concurrent_streams
        if stream_id % 4 == 1:
            self.core.send_unary(stream_id, b"\x88", b"\x00\x00\x00\x00\x00", b"\x40\x01a\x01b")

    def headers_too_large(self, stream_id: int, size: int) -> None:
        assert size > LIMITS.max_header_list_size or LIMITS.max_header_fields

    def data(self, stream_id: int, data: memoryview, end_stream: bool) -> None:
        self.events += 1
        assert self.core is not None
        self.core.consume(stream_id, len(data))

    def reset(self, stream_id: int) -> None:
        self.events += 1

    def sent(self, stream_id: int) -> None:
        pass

    def ping_ack(self, opaque: bytes) -> None:
        assert len(opaque) == 8

    def terminated(self, code: int, reason: str) -> None:
        assert not self.ended
        self.ended = True


def _connection() -> tuple[Connection, Sink]:
    sink = Sink()
    now = [0.0]
    core = Connection(sink, LIMITS, lambda: now[0])
    sink.core = core
    core.initiate()
    return core, sink


def _check(core: Connection, sink: Sink) -> None:
    """The invariants after any input."""
    out = core.data_to_send()
    view = memoryview(out)
    while view:  # our output parses as frames
        assert len(view) >= 9
        parsed, length = Frame.parse_frame_header(view[:9])
        assert length <= 1 << 14
        parsed.parse_body(view[9 : 9 + length])
        view = view[9 + length :]
    assert core.open_streams <= LIMITS.max_concurrent_streams
    assert core._buffered <= LIMITS.max_frame_size + 9 or not core._chunks
    assert len(core._closed_streams) <= LIMITS.recently_closed
    assert core._block is None or len(core._block) <= LIMITS.max_header_block
    assert core.closed == sink.ended


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_core_takes_any_bytes_after_the_preface(chunks: list[bytes]) -> None:
    core, sink = _connection()
    core.receive(PREFACE)
    for chunk in chunks:
        core.receive(chunk)
        _check(core, sink)


def _frames() -> st.SearchStrategy[bytes]:
    encoder = hpack.Encoder()
    header_block = st.sampled_from(
        [
            lambda: encoder.encode(REQUEST),
            lambda: encoder.encode([*REQUEST, ("x-big", "v" * 600)]),
            lambda: encoder.encode([("grpc-status", "0")]),
            lambda: encoder.encode([(":path", "/x")]),
            lambda: b"\x3f\xe1\x1f",
            lambda: b"",
        ]
    ).map(lambda make: bytes(make()))
    stream_id = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 13, 99, 2**31 - 1])
    return st.one_of(
        st.builds(
            lambda kind, flags, sid, payload: frame(kind, flags, sid, payload),
            st.integers(0, 12),
            st.integers(0, 255),
            stream_id,
            st.binary(max_size=64),
        ),
        st.builds(
            lambda flags, sid, block: frame(1, flags, sid, block),
            st.sampled_from([0x4, 0x5, 0x0, 0x1, 0x24, 0xC]),
            stream_id,
            header_block,
        ),
        st.builds(
            lambda sid, size, end: frame(0, 1 if end else 0, sid, bytes(size)),
            stream_id,
            st.integers(0, 1 << 14),
            st.booleans(),
        ),
        st.builds(
            lambda sid, inc: frame(8, 0, sid, struct.pack(">L", inc)),
            stream_id,
            st.integers(0, 2**32 - 1),
        ),
        st.builds(
            lambda key, value: frame(4, 0, 0, struct.pack(">HL", key, value)),
            st.integers(0, 8),
            st.integers(0, 2**32 - 1),
        ),
    )


@FUZZ
@given(st.lists(_frames(), max_size=30), st.integers(1, 64))
def test_core_takes_any_frame_sequence_in_any_split(frames: list[bytes], split: int) -> None:
    core, sink = _connection()
    data = PREFACE + frame(4, 0, 0) + b"".join(frames)
    for i in range(0, len(data), split * 7):
        core.receive(data[i : i + split * 7])
        _check(core, sink)


@FUZZ
@given(st.binary(max_size=300))
def test_hpack_decoder_takes_any_bytes(block: bytes) -> None:
    decoder = Decoder()
    try:
        fields = decoder.decode(block, 1024, 32)
    except HpackError:
        return
    assert len(fields) <= 32
    assert sum(len(n) + len(v) + 32 for n, v in fields) <= 1024


@FUZZ
@given(
    st.lists(
        st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=6),
        max_size=5,
    )
)
def test_hpack_decoder_agrees_with_the_encoder_over_a_connection(
    blocks: list[list[tuple[bytes, bytes]]],
) -> None:
    encoder, decoder = hpack.Encoder(), Decoder()
    for fields in blocks:
        lowered = [(n.lower(), v) for n, v in fields]
        assert decoder.decode(encoder.encode(lowered)) == lowered


class _Core:
    """The part of the HTTP/2 core a gRPC stream talks to, recording what it was told."""

    def __init__(self) -> None:
        self.consumed = 0
        self.trailers: list[bytes] = []

    def consume(self, stream_id: int, size: int) -> None:
        self.consumed += size

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        self.trailers.append(block)

    def pending(self, stream_id: int) -> bool:
        return False


class _Link:
    max_message_bytes = 1000

    def __init__(self) -> None:
        self.core = _Core()

    def consume(self, stream_id: int, size: int) -> None:
        self.core.consume(stream_id, size)

    def answered(self, rpc: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _stream(link: _Link) -> Stream:
    async def handler(stream: Stream) -> None:
        pass

    method = Method(handler, Cardinality.STREAM_STREAM, bytes, bytes)
    return Stream(link, 1, method)  # type: ignore[arg-type]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(1, 50))
def test_grpc_messages_in_any_split(messages: list[bytes], split: int) -> None:
    link = _Link()
    stream = _stream(link)
    wire = b"".join(struct.pack(">BL", 0, len(m)) + m for m in messages)
    for i in range(0, len(wire), split):
        stream.data(memoryview(wire[i : i + split]), False)
    queued = list(stream._messages)
    assert [m for m, _ in queued] == messages
    # credit: what is queued is held back, everything else went back at once
    assert link.core.consumed + sum(held for _, held in queued) == len(wire)
    assert not link.core.trailers


@FUZZ
@given(st.binary(max_size=400), st.integers(1, 50))
def test_grpc_decoding_takes_any_bytes(wire: bytes, split: int) -> None:
    link = _Link()
    stream = _stream(link)
    for i in range(0, len(wire), split):
        stream.data(memoryview(wire[i : i + split]), False)
    # either whole messages, or refused with a status (too large, unknown compression)
    assert stream._partial_size < 5 + link.max_message_bytes
    assert len(link.core.trailers) <= 1
