"""Property-based tests of HTTP/1.1 request handling: bytes in, well-formed answers out.

Hypothesis builds request streams (valid, subtly wrong, and random bytes; pipelined; split at
arbitrary points) and feeds them to one connection with a mock transport. Whatever arrives:

* no exception escapes the protocol (asyncio would only log it and leave the client hanging);
* what the server wrote parses as a sequence of complete HTTP/1.1 responses, one per request
  parsed, in order, at most one refusal and only as the last answer, which closes;
* every buffer stays within its limit (target, header section, body, queue).

``KERNEL_FUZZ_EXAMPLES`` sets the examples per property (a small default keeps the suite fast;
``bench/fuzz.py`` raises it for long runs).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.frontends._http_server._connection import _QUEUE_HIGH, HttpConnection
from kernel.frontends._http_server._types import HttpLimits, HttpRequest, Reply

EXAMPLES = int(os.environ.get("KERNEL_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = HttpLimits(
    max_body=4096,
    max_url=64,
    max_header_bytes=512,
    max_headers=8,
    header_timeout=60.0,
    idle_timeout=60.0,
)
STATUSES = {200, 400, 408, 414, 431, 500, 503}


class Transport:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed and not self.eof, "write after close"
        self.buffer += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@dataclass
class App:
    max_body: int = LIMITS.max_body
    received: list[HttpRequest] = field(default_factory=list)

    async def handle(self, request: HttpRequest) -> Reply:
        self.received.append(request)
        await asyncio.sleep(0)
        return Reply(200, [(b"x-path", request.path.encode("latin-1")[:32])], [bytes(request.body)])


class Connection(HttpConnection):
    """Records which answers were to HEAD requests (they have no body to parse)."""

    heads: list[bool]

    def _write(self, reply: Reply, close: bool, head: bool) -> None:
        self.heads.append(head)
        super()._write(reply, close, head)


def check_bounds(connection: HttpConnection) -> None:
    reader = connection._reader
    assert len(reader._url) <= LIMITS.max_url
    assert len(reader._body) <= LIMITS.max_body
    headers = reader._headers
    assert len(headers) <= LIMITS.max_headers
    assert len(reader._url) + sum(len(k) + len(v) + 4 for k, v in headers.items()) <= (
        LIMITS.max_header_bytes
    )


def parse(data: bytes, heads: list[bool]) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    responses = []
    rest = bytes(data)
    for head in heads:
        while rest.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
            rest = rest[25:]
        status_head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {status_head!r}"
        lines = status_head.split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.1 (\d{3}) [A-Za-z -]+", lines[0])
        assert match, lines[0]
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(headers[b"content-length"])
        size = 0 if head else length
        assert len(rest) >= size
        responses.append((int(match[1]), headers, rest[:size]))
        rest = rest[size:]
    assert rest == b"", f"bytes after the last response: {rest[:80]!r}"
    return responses


async def exercise(pieces: list[bytes]) -> None:
    app = App()
    connection = Connection(app, LIMITS, set())
    connection.heads = []
    transport = Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    for piece in pieces:
        if transport.closed:
            break
        if not transport.reading:  # paused: let the queue drain, as the event loop would
            for _ in range(1000):
                await asyncio.sleep(0)
                if transport.reading or transport.closed:
                    break
        connection.data_received(piece)
        check_bounds(connection)
        assert len(connection._queue) <= _QUEUE_HIGH + len(piece) // 16 + 1
        await asyncio.sleep(0)
    for _ in range(10_000):
        if connection.task is None:
            break
        await asyncio.sleep(0)
    assert connection.task is None, "the connection is still answering"
    responses = parse(transport.buffer, connection.heads)
    for i, (status, headers, _) in enumerate(responses):
        assert status in STATUSES
        if headers.get(b"connection") == b"close":
            assert i == len(responses) - 1, "an answer after connection: close"
            assert transport.closed or transport.eof
        if status != 200:
            assert headers.get(b"connection") == b"close"
    ok = [r for r in responses if r[0] == 200]
    assert len(ok) == len(app.received), "a request answered twice or not at all"
    assert len(responses) - len(ok) <= 1, "more than one refusal"
    for (_, headers, _), request in zip(ok, app.received, strict=False):
        assert headers[b"x-path"] == request.path.encode("latin-1")[:32]
    connection.connection_lost(None)


def run(pieces: list[bytes]) -> None:
    asyncio.run(exercise(pieces))


# -- strategies -------------------------------------------------------------------------------

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=12,
)
FIELD_VALUE = st.binary(max_size=40) | TOKEN.map(str.encode)
METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"G T", b""])
TARGETS = st.one_of(
    st.sampled_from([b"/", b"/v2", b"/v2/health/live", b"/v2/models/m/infer", b"*"]),
    st.binary(max_size=100).map(lambda b: b"/" + b),
    st.sampled_from([b"http://host/v2?x=1", b"http://[::1", b"//x", b"/a?b#c"]),
    st.integers(0, 200).map(lambda n: b"/" + b"a" * n),
)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1"])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """(framing header lines, body bytes) with a framing that is right, wrong or hostile."""
    body = draw(st.binary(max_size=300))
    kind = draw(
        st.sampled_from(
            [
                "none",
                "length",
                "wrong-length",
                "duplicate",
                "huge",
                "chunked",
                "bad-chunked",
                "both",
                "coding",
                "expect",
            ]
        )
    )
    if kind == "none":
        return [], b""
    if kind == "length":
        return [b"Content-Length: %d" % len(body)], body
    if kind == "wrong-length":
        return [b"Content-Length: %d" % draw(st.integers(0, 400))], body
    if kind == "duplicate":
        return [
            b"Content-Length: %d" % len(body),
            b"Content-Length: %d" % draw(st.integers(0, 400)),
        ], body
    if kind == "huge":
        return [
            b"Content-Length: "
            + draw(st.sampled_from([b"99999999999999999999", b"5000", b"-1", b"1e3", b""]))
        ], body
    sizes = draw(st.lists(st.integers(1, 120), max_size=6))
    chunks, offset = [], 0
    for size in sizes:
        part = body[offset : offset + size]
        offset += size
        if part:
            ext = draw(st.sampled_from([b"", b";name=value", b";x"]))
            chunks.append(b"%x%s\r\n%s\r\n" % (len(part), ext, part))
    encoded = (
        b"".join(chunks) + b"0\r\n" + draw(st.sampled_from([b"", b"Trailer: x\r\n"])) + b"\r\n"
    )
    if kind == "chunked":
        return [b"Transfer-Encoding: chunked"], encoded
    if kind == "bad-chunked":
        mutated = bytearray(encoded)
        if mutated:
            position = draw(st.integers(0, len(mutated) - 1))
            mutated[position] = draw(st.integers(0, 255))
        return [
            b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"Chunked", b" chunked"]))
        ], bytes(mutated)
    if kind == "both":
        return [b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(encoded)], encoded
    if kind == "expect":
        return [b"Expect: 100-continue", b"Content-Length: %d" % len(body)], body
    coding = draw(
        st.sampled_from([b"gzip, chunked", b"gzip", b"identity", b"chunked, chunked", b"x"])
    )
    return [b"Transfer-Encoding: " + coding], encoded


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(METHODS)
    target = draw(TARGETS)
    version = draw(VERSIONS)
    header_lines = [
        b"%s: %s" % (draw(TOKEN).encode(), draw(FIELD_VALUE))
        for _ in range(draw(st.integers(0, 10)))
    ]
    framing, body = draw(bodies())
    lines = header_lines + framing
    if draw(st.booleans()):
        lines.append(
            draw(
                st.sampled_from(
                    [
                        b"Connection: close",
                        b"Connection: keep-alive",
                        b"Connection: Upgrade",
                        b"Upgrade: h2c",
                    ]
                )
            )
        )
    lines = draw(st.permutations(lines))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    return (
        method
        + b" "
        + target
        + b" "
        + version
        + eol
        + b"".join(line + eol for line in lines)
        + eol
        + body
    )


@st.composite
def split(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """``stream`` cut at arbitrary points (one piece per ``data_received``)."""
    if not stream:
        return [b""]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges) if b > a]


@st.composite
def pipelines(draw: st.DrawFn) -> list[bytes]:
    stream = b"".join(draw(st.lists(requests(), min_size=1, max_size=5)))
    return draw(split(stream))


@st.composite
def mutated_pipelines(draw: st.DrawFn) -> list[bytes]:
    valid = [
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"HEAD /v2 HTTP/1.1\r\n\r\n",
    ]
    stream = bytearray(b"".join(draw(st.lists(st.sampled_from(valid), min_size=1, max_size=6))))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(stream)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip" and position < len(stream):
            stream[position] = draw(st.integers(0, 255))
        elif action == "insert":
            stream[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del stream[position : position + draw(st.integers(1, 8))]
    return draw(split(bytes(stream)))


# -- properties -------------------------------------------------------------------------------


@FUZZ
@given(pipelines())
def test_generated_request_streams(pieces: list[bytes]) -> None:
    run(pieces)


@FUZZ
@given(mutated_pipelines())
def test_mutated_valid_streams(pieces: list[bytes]) -> None:
    run(pieces)


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8))
def test_random_bytes(pieces: list[bytes]) -> None:
    run(pieces)


@FUZZ
@given(st.integers(0, 3), st.data())
def test_oversized_parts_are_refused_with_bounded_buffers(which: int, data: st.DataObject) -> None:
    """Targets, header fields and bodies far over the limits, dribbled in small reads."""
    size = data.draw(st.integers(1, 20_000))
    if which == 0:
        stream = b"GET /" + b"a" * size + b" HTTP/1.1\r\n\r\n"
    elif which == 1:
        stream = b"GET / HTTP/1.1\r\nX: " + b"v" * size + b"\r\n\r\n"
    elif which == 2:
        stream = b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * (size // 6 + 1) + b"\r\n"
    else:
        chunk = b"%x\r\n%s\r\n" % (100, b"b" * 100)
        stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * (
            size // 100 + 1
        )
    step = data.draw(st.integers(max(1, size // 400), 600))
    run([stream[i : i + step] for i in range(0, len(stream), step)])
