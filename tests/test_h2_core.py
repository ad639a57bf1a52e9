"""The sans-IO HTTP/2 core (``kernel.frontends._grpc._connection``), fed bytes, no sockets.

Frames are built with ``hyperframe`` (valid ones) or by hand (those no library would build), header
blocks with the ``hpack`` package's encoder, and the core's output is parsed back with
``hyperframe``, so both directions are checked by an independent implementation. One test per
RFC 9113 / RFC 7541 rule and per limit listed in the core's docstring.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from kernel.frontends._grpc._connection import Connection
from kernel.frontends._grpc._limits import Http2Limits
from kernel.frontends._grpc._wire import PREFACE, frame

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0, 1, 3, 5, 6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 11
REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/inference.GRPCInferenceService/ServerLive"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """The core's events, in order."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.events.append(("request", stream_id, headers, end_stream))

    def headers_too_large(self, stream_id: int, size: int) -> None:
        self.events.append(("too_large", stream_id, size))

    def data(self, stream_id: int, data: memoryview, end_stream: bool) -> None:
        self.events.append(("data", stream_id, bytes(data), end_stream))

    def reset(self, stream_id: int) -> None:
        self.events.append(("reset", stream_id))

    def sent(self, stream_id: int) -> None:
        self.events.append(("sent", stream_id))

    def ping_ack(self, opaque: bytes) -> None:
        self.events.append(("ping_ack", opaque))

    def terminated(self, code: int, reason: str) -> None:
        self.events.append(("terminated", code, reason))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


class Client:
    """A client on a core: sends frames, reads what the core answered."""

    def __init__(self, limits: Http2Limits | None = None, settings: dict[int, int] | None = None):
        self.clock = Clock()
        self.recorder = Recorder()
        self.core = Connection(self.recorder, limits, self.clock)
        self.encoder = hpack.Encoder()
        self.core.initiate()
        server_preface = parse(self.core.data_to_send())
        assert isinstance(server_preface[0], SettingsFrame)
        self.server_settings = server_preface[0].settings
        self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())
        assert self.output() == [("SettingsFrame", 0, {"ACK"})]

    def send(self, *frames: bytes | Frame) -> None:
        data = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        self.core.receive(data)

    def block(self, fields: list[tuple[str, str]] | None = None) -> bytes:
        return bytes(self.encoder.encode(fields if fields is not None else REQUEST))

    def headers(
        self, stream_id: int, fields: list[tuple[str, str]] | None = None, end: bool = False
    ) -> HeadersFrame:
        flags = {"END_HEADERS", "END_STREAM"} if end else {"END_HEADERS"}
        return HeadersFrame(stream_id, self.block(fields), flags=flags)

    def frames(self) -> list[Frame]:
        return parse(self.core.data_to_send())

    def output(self) -> list[tuple[str, int, set[str]]]:
        return [(type(f).__name__, f.stream_id, set(f.flags)) for f in self.frames()]

    def goaway(self) -> int:
        """The GOAWAY error code the core answered with (and it stopped reading)."""
        frames = [f for f in self.frames() if isinstance(f, GoAwayFrame)]
        assert len(frames) == 1, frames
        assert self.core.closed
        assert self.recorder.events[-1][0] == "terminated"
        return int(frames[0].error_code)

    def resets(self) -> dict[int, int]:
        return {f.stream_id: f.error_code for f in self.frames() if isinstance(f, RstStreamFrame)}


def parse(data: bytes) -> list[Frame]:
    frames, view = [], memoryview(data)
    while view:
        parsed, length = Frame.parse_frame_header(view[:9])
        parsed.parse_body(view[9 : 9 + length])
        frames.append(parsed)
        view = view[9 + length :]
    return frames


def raw(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return frame(kind, flags, stream_id, payload)


DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WU, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
U32 = struct.Struct(">L")


# -- connection errors: GOAWAY with the RFC's code ------------------------------------------------


def test_preface_must_come_first() -> None:
    core = Connection(Recorder(), None, Clock())
    core.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert core.closed
    assert isinstance(parse(core.data_to_send())[-1], GoAwayFrame)


def _on_open_stream(c: Client, *frames: bytes | Frame) -> None:
    c.send(c.headers(1))
    c.output()
    c.send(*frames)


CONNECTION_ERRORS: dict[str, tuple[Any, int]] = {
    # frames on stream 0 that must not be there, and frames that must be there
    "data_on_stream_0": (lambda c: c.send(raw(DATA, 0, 0, b"x")), PROTOCOL_ERROR),
    "headers_on_stream_0": (
        lambda c: c.send(raw(HEADERS, END_HEADERS, 0, c.block())),
        PROTOCOL_ERROR,
    ),
    "continuation_on_stream_0": (lambda c: c.send(raw(CONT, END_HEADERS, 0)), PROTOCOL_ERROR),
    "rst_stream_on_stream_0": (lambda c: c.send(raw(RST, 0, 0, U32.pack(0))), PROTOCOL_ERROR),
    "priority_on_stream_0": (lambda c: c.send(raw(PRIORITY, 0, 0, bytes(5))), PROTOCOL_ERROR),
    "settings_on_a_stream": (lambda c: c.send(raw(SETTINGS, 0, 1)), PROTOCOL_ERROR),
    "ping_on_a_stream": (lambda c: c.send(raw(PING, 0, 1, bytes(8))), PROTOCOL_ERROR),
    "goaway_on_a_stream": (lambda c: c.send(raw(GOAWAY, 0, 1, bytes(8))), PROTOCOL_ERROR),
    "push_promise_from_a_client": (lambda c: c.send(raw(PUSH, 0, 1, bytes(4))), PROTOCOL_ERROR),
    # lengths
    "ping_not_8_bytes": (lambda c: c.send(raw(PING, 0, 0, bytes(7))), FRAME_SIZE_ERROR),
    "settings_not_a_multiple_of_6": (
        lambda c: c.send(raw(SETTINGS, 0, 0, bytes(5))),
        FRAME_SIZE_ERROR,
    ),
    "settings_ack_with_payload": (
        lambda c: c.send(raw(SETTINGS, ACK, 0, bytes(6))),
        FRAME_SIZE_ERROR,
    ),
    "window_update_not_4_bytes": (lambda c: c.send(raw(WU, 0, 0, bytes(3))), FRAME_SIZE_ERROR),
    "rst_stream_not_4_bytes": (
        lambda c: _on_open_stream(c, raw(RST, 0, 1, bytes(3))),
        FRAME_SIZE_ERROR,
    ),
    "goaway_shorter_than_8": (lambda c: c.send(raw(GOAWAY, 0, 0, bytes(7))), FRAME_SIZE_ERROR),
    "frame_above_max_frame_size": (
        lambda c: c.send(raw(DATA, 0, 1, bytes(c.core.limits.max_frame_size + 1))),
        FRAME_SIZE_ERROR,
    ),
    "headers_priority_block_cut_short": (
        lambda c: c.send(raw(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, bytes(3))),
        FRAME_SIZE_ERROR,
    ),
    # padding
    "padding_as_long_as_the_payload": (
        lambda c: _on_open_stream(c, raw(DATA, PADDED, 1, bytes([4]) + bytes(3))),
        PROTOCOL_ERROR,
    ),
    "padded_frame_without_pad_length": (
        lambda c: _on_open_stream(c, raw(DATA, PADDED, 1)),
        PROTOCOL_ERROR,
    ),
    # flow control
    "window_update_of_0_on_the_connection": (
        lambda c: c.send(raw(WU, 0, 0, U32.pack(0))),
        PROTOCOL_ERROR,
    ),
    "connection_window_past_2_31": (
        lambda c: c.send(raw(WU, 0, 0, U32.pack(2**31 - 1))),
        FLOW_CONTROL_ERROR,
    ),
    "initial_window_size_above_2_31": (
        lambda c: c.send(SettingsFrame(0, settings={4: 2**31})),
        FLOW_CONTROL_ERROR,
    ),
    "initial_window_size_overflows_an_open_stream": (
        lambda c: _on_open_stream(
            c,
            raw(WU, 0, 1, U32.pack(2**31 - 1 - 65535)),
            SettingsFrame(0, settings={4: 65536}),
        ),
        FLOW_CONTROL_ERROR,
    ),
    # settings values
    "enable_push_not_0_or_1": (lambda c: c.send(SettingsFrame(0, settings={2: 2})), PROTOCOL_ERROR),
    "max_frame_size_below_2_14": (
        lambda c: c.send(SettingsFrame(0, settings={5: 16383})),
        PROTOCOL_ERROR,
    ),
    "max_frame_size_above_2_24": (
        lambda c: c.send(SettingsFrame(0, settings={5: 2**24})),
        PROTOCOL_ERROR,
    ),
    # stream ids
    "even_stream_id": (lambda c: c.send(c.headers(2)), PROTOCOL_ERROR),
    "decreasing_stream_id": (lambda c: c.send(c.headers(5), c.headers(3)), PROTOCOL_ERROR),
    "data_on_an_idle_stream": (lambda c: c.send(raw(DATA, 0, 7, b"x")), PROTOCOL_ERROR),
    "rst_stream_on_an_idle_stream": (lambda c: c.send(raw(RST, 0, 7, U32.pack(8))), PROTOCOL_ERROR),
    "window_update_on_an_idle_stream": (
        lambda c: c.send(raw(WU, 0, 7, U32.pack(1))),
        PROTOCOL_ERROR,
    ),
    "data_after_end_stream_on_a_closed_stream": (
        lambda c: (
            c.send(c.headers(1, end=True)),
            c.core.send_headers(1, b"\x88", end_stream=True),
            c.send(raw(DATA, 0, 1, b"x")),
        ),
        STREAM_CLOSED,
    ),
    # header blocks
    "continuation_without_headers": (
        lambda c: c.send(raw(CONT, END_HEADERS, 1, c.block())),
        PROTOCOL_ERROR,
    ),
    "continuation_of_another_stream": (
        lambda c: c.send(raw(HEADERS, 0, 1, c.block()), raw(CONT, END_HEADERS, 3)),
        PROTOCOL_ERROR,
    ),
    "a_frame_inside_a_header_block": (
        lambda c: c.send(raw(HEADERS, 0, 1, c.block()), raw(PING, 0, 0, bytes(8))),
        PROTOCOL_ERROR,
    ),
    "undecodable_header_block": (
        lambda c: c.send(raw(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff\xff")),
        COMPRESSION_ERROR,
    ),
    "table_size_update_inside_a_block": (
        lambda c: c.send(raw(HEADERS, END_HEADERS, 1, c.block() + b"\x3f\xe1\x1f")),
        COMPRESSION_ERROR,
    ),
    "table_size_update_above_the_setting": (
        lambda c: c.send(raw(HEADERS, END_HEADERS, 1, b"\x3f\xe2\x1f" + c.block())),
        COMPRESSION_ERROR,
    ),
}


@pytest.mark.parametrize("rule", CONNECTION_ERRORS)
def test_connection_error(rule: str) -> None:
    client = Client()
    send, code = CONNECTION_ERRORS[rule]
    send(client)
    assert client.goaway() == code
    client.send(PingFrame(0, b"12345678"))  # nothing is read after a connection error
    assert client.frames() == []


def test_data_beyond_the_connection_window() -> None:
    client = Client(Http2Limits(connection_window=65535, max_frame_size=1 << 16))
    client.send(client.headers(1), raw(DATA, 0, 1, bytes(65536)))
    assert client.goaway() == FLOW_CONTROL_ERROR


# -- stream errors: RST_STREAM, the connection carries on -----------------------------------------

STREAM_ERRORS: dict[str, tuple[Any, int]] = {
    "data_on_a_half_closed_remote_stream": (
        lambda c: c.send(c.headers(1, end=True), raw(DATA, 0, 1, b"x")),
        STREAM_CLOSED,
    ),
    "headers_on_a_half_closed_remote_stream": (
        lambda c: c.send(c.headers(1, end=True), c.headers(1, [("x", "y")], end=True)),
        STREAM_CLOSED,
    ),
    "window_update_of_0_on_a_stream": (
        lambda c: c.send(c.headers(1), raw(WU, 0, 1, U32.pack(0))),
        PROTOCOL_ERROR,
    ),
    "stream_window_past_2_31": (
        lambda c: c.send(c.headers(1), raw(WU, 0, 1, U32.pack(2**31 - 1))),
        FLOW_CONTROL_ERROR,
    ),
    "priority_not_5_bytes": (lambda c: c.send(raw(PRIORITY, 0, 1, bytes(4))), FRAME_SIZE_ERROR),
    "priority_depending_on_itself": (
        lambda c: c.send(PriorityFrame(1, depends_on=1)),
        PROTOCOL_ERROR,
    ),
    "headers_depending_on_themselves": (
        lambda c: c.send(
            HeadersFrame(1, c.block(), flags={"END_HEADERS", "PRIORITY"}, depends_on=1)
        ),
        PROTOCOL_ERROR,
    ),
    "trailers_without_end_stream": (
        lambda c: c.send(c.headers(1), c.headers(1, [("x", "y")])),
        PROTOCOL_ERROR,
    ),
    "pseudo_header_in_trailers": (
        lambda c: c.send(c.headers(1), c.headers(1, [(":path", "/x")], end=True)),
        PROTOCOL_ERROR,
    ),
}

MALFORMED_REQUESTS: dict[str, list[tuple[str, str]]] = {
    "unknown_pseudo_header": [*REQUEST[:4], (":foo", "x"), *REQUEST[4:]],
    "duplicate_pseudo_header": [*REQUEST[:3], (":path", "/again"), *REQUEST[3:]],
    "pseudo_header_after_a_regular_one": [*REQUEST, (":authority", "late")],
    "missing_path": [f for f in REQUEST if f[0] != ":path"],
    "missing_method": [f for f in REQUEST if f[0] != ":method"],
    "uppercase_name": [*REQUEST, ("X-Upper", "1")],
    "connection_header": [*REQUEST, ("connection", "keep-alive")],
    "transfer_encoding_header": [*REQUEST, ("transfer-encoding", "chunked")],
    "te_other_than_trailers": [*REQUEST[:5], ("te", "gzip")],
    "cr_lf_in_a_value": [*REQUEST, ("x-a", "b\r\nc")],
    "nul_in_a_value": [*REQUEST, ("x-a", "b\x00c")],
    "leading_whitespace_in_a_value": [*REQUEST, ("x-a", " b")],
    "space_in_a_name": [*REQUEST, ("x a", "b")],
}


@pytest.mark.parametrize("rule", STREAM_ERRORS)
def test_stream_error(rule: str) -> None:
    client = Client()
    send, code = STREAM_ERRORS[rule]
    send(client)
    assert client.resets() == {1: code}
    assert not client.core.closed
    client.send(client.headers(3, end=True))  # the connection still serves new streams
    assert client.recorder.events[-1][:2] == ("request", 3)


@pytest.mark.parametrize("rule", MALFORMED_REQUESTS)
def test_malformed_request_is_a_stream_error(rule: str) -> None:
    client = Client()
    client.send(client.headers(1, MALFORMED_REQUESTS[rule], end=True))
    assert client.resets() == {1: PROTOCOL_ERROR}
    assert "request" not in client.recorder.kinds()
    client.send(client.headers(3, end=True))  # the header table stayed in step
    assert client.recorder.events[-1][:2] == ("request", 3)


def test_malformed_field_referenced_from_the_table_later() -> None:
    client = Client()
    bad = [*REQUEST, ("x-a", " b")]  # hpack's encoder indexes it
    client.send(client.headers(1, bad, end=True), client.headers(3, bad, end=True))
    assert client.resets() == {1: PROTOCOL_ERROR, 3: PROTOCOL_ERROR}


def test_data_beyond_the_stream_window() -> None:
    client = Client(Http2Limits(stream_window=16384))
    client.send(client.headers(1), raw(DATA, 0, 1, bytes(16384)), raw(DATA, 0, 1, b"x"))
    assert client.resets() == {1: FLOW_CONTROL_ERROR}
    # the stream's data was never consumed: the connection window got it back
    assert client.core._recv_window + client.core._credit == client.core.limits.connection_window


def test_unknown_frame_types_and_settings_are_ignored() -> None:
    client = Client()
    client.send(raw(0x42, 0xFF, 0, b"whatever"), raw(0x42, 0, 9, b""))
    client.send(SettingsFrame(0, settings={0x99: 7}))
    assert client.output() == [("SettingsFrame", 0, {"ACK"})]
    assert not client.core.closed


def test_late_frames_of_a_stream_we_reset_are_ignored() -> None:
    client = Client()
    client.send(client.headers(1))
    client.core.send_headers(1, b"\x88", end_stream=True)  # answered early: RST NO_ERROR
    assert client.resets() == {1: NO_ERROR}
    client.send(raw(DATA, 0, 1, bytes(100)), client.headers(1, [("x", "y")], end=True))
    client.send(raw(RST, 0, 1, U32.pack(CANCEL)), raw(WU, 0, 1, U32.pack(5)))
    assert client.frames() == []
    assert not client.core.closed
    assert client.core._credit == 100  # its DATA still counted for the connection


# -- limits ---------------------------------------------------------------------------------------


def test_settings_advertise_the_limits() -> None:
    client = Client()
    limits = client.core.limits
    assert client.server_settings == {
        2: 0,
        3: limits.max_concurrent_streams,
        4: limits.stream_window,
        5: limits.max_frame_size,
        6: limits.max_header_list_size,
    }


def test_a_changed_header_table_size_is_answered_by_a_table_size_update() -> None:
    """RFC 7541 4.2: after the client changes SETTINGS_HEADER_TABLE_SIZE, the server's next
    header block begins with a dynamic table size update (to 0: the server never indexes); the
    blocks after it do not repeat it."""
    client = Client()
    block = bytes(hpack.Encoder().encode([(":status", "200")]))
    client.send(client.headers(1))
    client.core.send_headers(1, block)
    assert client.frames()[0].data == block  # no change, no update
    client.send(SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 0}))
    client.frames()
    client.send(client.headers(3))
    client.core.send_unary(3, block, b"\0\0\0\0\0", block)
    head, tail = [f for f in client.frames() if isinstance(f, HeadersFrame)]
    assert head.data == b"\x20" + block
    assert tail.data == block
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 0
    assert decoder.decode(head.data) == [(":status", "200")]


def test_streams_above_max_concurrent_streams_are_refused() -> None:
    client = Client(Http2Limits(max_concurrent_streams=2))
    client.send(client.headers(1), client.headers(3), client.headers(5))
    assert client.resets() == {5: REFUSED_STREAM}
    assert [e[1] for e in client.recorder.events if e[0] == "request"] == [1, 3]
    client.send(raw(RST, 0, 1, U32.pack(CANCEL)), client.headers(7))  # room again
    assert client.recorder.events[-1][:2] == ("request", 7)


def test_header_list_size_is_enforced_on_the_decoded_list() -> None:
    client = Client(Http2Limits(max_header_list_size=1024))
    big = [*REQUEST, ("x-big", "v" * 2000)]
    client.send(client.headers(1, big, end=True))
    event = client.recorder.events[-1]
    assert event[:2] == ("too_large", 1) and event[2] > 1024
    # an indexed reference costs one byte on the wire but counts in full when decoded
    client.send(client.headers(3, [*REQUEST, ("x-big", "v" * 900)], end=True))
    client.send(client.headers(5, [*REQUEST, ("x-big", "v" * 900)], end=True))
    assert client.recorder.events[-1][:2] == ("too_large", 5)


def test_header_field_count_is_capped() -> None:
    client = Client(Http2Limits(max_header_fields=10))
    client.send(client.headers(1, [*REQUEST, *[(f"x-{i}", "v") for i in range(10)]], end=True))
    assert client.recorder.events[-1][:2] == ("too_large", 1)


def test_header_block_of_one_headers_frame_is_capped() -> None:
    client = Client(Http2Limits(max_header_block=1024))
    client.send(raw(HEADERS, END_HEADERS, 1, bytes(1025)))
    assert client.goaway() == ENHANCE_YOUR_CALM


def test_header_block_across_continuations_is_capped() -> None:
    client = Client(Http2Limits(max_header_block=1024))
    client.send(raw(HEADERS, 0, 1, bytes(1000)), raw(CONT, 0, 1, bytes(100)))
    assert client.goaway() == ENHANCE_YOUR_CALM


def test_continuation_flood() -> None:
    client = Client()
    block = client.block()
    client.send(raw(HEADERS, 0, 1, block[:1]))
    client.send(*[raw(CONT, 0, 1) for _ in range(client.core.limits.max_continuation_frames + 1)])
    assert client.goaway() == ENHANCE_YOUR_CALM


def test_header_block_split_over_continuations_decodes() -> None:
    client = Client()
    block = client.block()
    parts = [block[i : i + 5] for i in range(0, len(block), 5)]
    client.send(
        raw(HEADERS, END_STREAM, 1, parts[0]),
        *[raw(CONT, 0, 1, p) for p in parts[1:-1]],
        raw(CONT, END_HEADERS, 1, parts[-1]),
    )
    assert client.recorder.events[-1][:2] == ("request", 1)
    assert client.recorder.events[-1][3] is True


def test_rapid_reset_budget() -> None:
    client = Client(Http2Limits(reset_burst=50, reset_rate=1.0))
    for i in range(50):
        client.send(client.headers(1 + 2 * i), raw(RST, 0, 1 + 2 * i, U32.pack(CANCEL)))
    assert not client.core.closed
    client.send(client.headers(101), raw(RST, 0, 101, U32.pack(CANCEL)))
    assert client.goaway() == ENHANCE_YOUR_CALM


def test_reset_budget_refills_with_time() -> None:
    client = Client(Http2Limits(reset_burst=10, reset_rate=10.0))
    for i in range(40):
        client.clock.now += 0.1  # one reset per refill: never runs dry
        client.send(client.headers(1 + 2 * i), raw(RST, 0, 1 + 2 * i, U32.pack(CANCEL)))
    assert not client.core.closed


@pytest.mark.parametrize(
    "flood",
    ["settings", "empty_data", "empty_headers", "priority", "unknown"],
)
def test_floods_of_frames_making_no_progress(flood: str) -> None:
    client = Client(Http2Limits(idle_frame_burst=100, idle_frame_rate=1.0))
    client.send(client.headers(1))
    one = {
        "settings": raw(SETTINGS, 0, 0),
        "empty_data": raw(DATA, 0, 1),
        "empty_headers": raw(HEADERS, 0, 1) + raw(CONT, END_HEADERS, 1, b""),
        "priority": raw(PRIORITY, 0, 3, bytes(5)),
        "unknown": raw(0x42, 0, 0, b"x"),
    }[flood]
    for _ in range(101):
        client.send(one)
        if client.core.closed:
            break
    assert client.goaway() in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
    if flood != "empty_headers":  # an empty block for an open stream is bad trailers first
        assert client.core.closed


def test_too_many_settings_in_one_frame() -> None:
    client = Client()
    client.send(raw(SETTINGS, 0, 0, struct.pack(">HL", 0x99, 0) * 33))
    assert client.goaway() == ENHANCE_YOUR_CALM


def test_ping_strikes_end_the_connection() -> None:
    client = Client(Http2Limits(keepalive_permit_without_calls=True))
    for i in range(3):  # the first is fine, then two strikes are tolerated
        client.send(PingFrame(0, bytes(8)))
        assert client.output() == [("PingFrame", 0, {"ACK"})], i
    client.send(PingFrame(0, bytes(8)))
    frames = client.frames()
    assert isinstance(frames[-1], GoAwayFrame)
    assert frames[-1].error_code == ENHANCE_YOUR_CALM
    assert frames[-1].additional_data == b"too_many_pings"


def test_pings_spaced_by_the_interval_or_by_our_data_are_fine() -> None:
    client = Client(Http2Limits(keepalive_permit_without_calls=True))
    for _ in range(10):
        client.clock.now += 300
        client.send(PingFrame(0, bytes(8)))
    client.send(client.headers(1))
    for _ in range(10):
        client.core.send_headers(1, b"\x88")  # we sent HEADERS: strikes start over
        client.send(PingFrame(0, bytes(8)))
    assert not client.core.closed


def test_pings_without_calls_need_permission() -> None:
    client = Client(Http2Limits(min_recv_ping_interval_without_data_ms=1000))
    for _ in range(3):
        client.clock.now += 10  # far apart, but no call is open: a strike each
        client.send(PingFrame(0, bytes(8)))
    assert not client.core.closed
    client.clock.now += 10
    client.send(PingFrame(0, bytes(8)))
    assert client.core.closed


def test_ping_acks_are_reported() -> None:
    client = Client()
    client.core.send_ping(b"abcdefgh")
    assert client.output() == [("PingFrame", 0, set())]
    assert client.core.pings_without_data == 1
    client.send(PingFrame(0, b"abcdefgh", flags={"ACK"}))
    assert client.recorder.events[-1] == ("ping_ack", b"abcdefgh")


# -- flow control -------------------------------------------------------------------------------


def test_credit_only_as_the_application_consumes() -> None:
    client = Client(Http2Limits(credit_threshold=1000))
    client.send(client.headers(1), DataFrame(1, bytes(5000)))
    assert client.recorder.events[-1] == ("data", 1, bytes(5000), False)
    assert client.frames() == []  # received is not consumed: no credit yet
    client.core.consume(1, 5000)
    updates = {f.stream_id: f.window_increment for f in client.frames()}
    assert updates == {1: 5000, 0: 5000}


def test_padding_is_credited_at_once() -> None:
    client = Client(Http2Limits(credit_threshold=100))
    client.send(client.headers(1), DataFrame(1, b"abc", pad_length=200, flags={"PADDED"}))
    assert client.recorder.events[-1] == ("data", 1, b"abc", False)
    updates = {f.stream_id: f.window_increment for f in client.frames()}
    assert updates == {1: 201, 0: 201}


def test_unconsumed_data_of_a_closed_stream_returns_to_the_connection() -> None:
    client = Client(Http2Limits(credit_threshold=1000))
    client.send(client.headers(1), DataFrame(1, bytes(5000)))
    client.send(RstStreamFrame(1, CANCEL))
    assert client.recorder.events[-1] == ("reset", 1)
    updates = {f.stream_id: f.window_increment for f in client.frames()}
    assert updates == {0: 5000}
    client.core.consume(1, 5000)  # too late: already credited once
    assert client.frames() == []


def test_data_waits_for_the_peer_window_and_trailers_wait_behind_it() -> None:
    client = Client(settings={4: 10})
    client.send(client.headers(1, end=True))
    client.core.send_headers(1, b"\x88")
    client.core.send_data(1, bytes(25))
    client.core.send_trailers(1, b"\x40\x0bgrpc-status\x010")
    frames = client.frames()
    assert [type(f).__name__ for f in frames] == ["HeadersFrame", "DataFrame"]
    assert len(frames[1].data) == 10
    assert client.core.pending(1)
    client.send(WindowUpdateFrame(1, 100))
    frames = client.frames()
    assert [(type(f).__name__, len(getattr(f, "data", b""))) for f in frames] == [
        ("DataFrame", 15),
        ("HeadersFrame", len(b"\x40\x0bgrpc-status\x010")),
    ]
    assert "END_STREAM" in frames[1].flags
    assert ("sent", 1) in client.recorder.events
    assert client.core.open_streams == 0


def test_data_respects_the_peer_max_frame_size() -> None:
    client = Client(settings={4: 1 << 20})
    client.send(WindowUpdateFrame(0, 1 << 20))
    client.send(client.headers(1, end=True))
    client.core.send_headers(1, b"\x88")
    client.core.send_data(1, bytes(40000))
    sizes = [len(f.data) for f in client.frames() if isinstance(f, DataFrame)]
    assert sizes == [16384, 16384, 7232]


def test_unary_reply_is_one_piece() -> None:
    client = Client()
    client.send(client.headers(1, end=True))
    client.core.send_unary(1, b"\x88", b"\x00\x00\x00\x00\x01x", b"\x40\x0bgrpc-status\x010")
    data = client.core.data_to_send()
    assert [type(f).__name__ for f in parse(data)] == ["HeadersFrame", "DataFrame", "HeadersFrame"]
    assert client.core.open_streams == 0


def test_abort_sends_trailers_when_no_message_went_out_in_part() -> None:
    client = Client(settings={4: 0})
    client.send(client.headers(1, end=True))
    client.core.send_headers(1, b"\x88")
    client.core.send_data(1, bytes(25))
    client.core.send_trailers(1, b"\x40\x0bgrpc-status\x010")
    client.frames()
    client.core.abort(1, b"\x40\x0bgrpc-status\x014")
    frames = client.frames()
    assert [type(f).__name__ for f in frames] == ["HeadersFrame"]
    assert frames[0].data == b"\x40\x0bgrpc-status\x014" and "END_STREAM" in frames[0].flags
    assert client.core.open_streams == 0


def test_abort_resets_when_a_message_went_out_in_part() -> None:
    client = Client(settings={4: 10})
    client.send(client.headers(1, end=True))
    client.core.send_headers(1, b"\x88")
    client.core.send_data(1, bytes(25))
    client.frames()
    client.core.abort(1, b"\x40\x0bgrpc-status\x014")
    assert client.resets() == {1: CANCEL}
    assert client.core.open_streams == 0


def test_goaway_refuses_new_streams() -> None:
    client = Client()
    client.send(client.headers(1))
    client.core.goaway()
    client.frames()
    client.send(client.headers(3))
    assert client.resets() == {3: REFUSED_STREAM}


def test_bytes_in_any_split() -> None:
    """One request fed a byte at a time gives the same events as in one piece."""
    whole = Client()
    split = Client()
    for client in (whole, split):
        frames = (
            client.headers(1).serialize() + DataFrame(1, b"hello", flags={"END_STREAM"}).serialize()
        )
        if client is whole:
            client.send(frames)
        else:
            for i in range(len(frames)):
                client.send(frames[i : i + 1])
    assert whole.recorder.events == split.recorder.events
    assert whole.recorder.kinds() == ["request", "data"]
