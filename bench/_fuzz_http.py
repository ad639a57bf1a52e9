"""Raw HTTP/1.1 cases for bench/fuzz.py: valid v2 requests, mutated as structure (request line,
headers, framing, chunking, pipelining, JSON and binary bodies) and as bytes, sent over a socket
with the answers parsed by httptools.

A case's outcome: the answers it got (status, body), whether the server closed the connection,
and whether it hung (neither answered nor closed within the timeout after the client's EOF).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import httptools

GOOD_INPUTS = [
    {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
    {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 1, 1, 1]},
]
EDGE_NUMBERS = [0, 1, -1, 4, 16, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 1e308, 0.5]
EDGE_STRINGS = ["", "FP32", "BYTES", "INT64", "FP33", "INPUT0", "INPUT1", "\x00", "é", "a" * 300]


@dataclass
class Request:
    method: bytes = b"GET"
    target: bytes = b"/v2/health/ready"
    version: bytes = b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False
    eol: bytes = b"\r\n"

    def encode(self, rng: random.Random) -> bytes:
        eol = self.eol
        out = [self.method + b" " + self.target + b" " + self.version + eol]
        headers = list(self.headers)
        body = self.body
        if self.chunked:
            pieces = []
            at = 0
            while at < len(body):
                n = rng.randint(1, len(body) - at)
                pieces.append(b"%x" % n + eol + body[at : at + n] + eol)
                at += n
            pieces.append(b"0" + eol + eol)
            body = b"".join(pieces)
        out.extend(name + b": " + value + eol for name, value in headers)
        out.append(eol)
        return b"".join(out) + body


def infer_json(inputs: Any = None, **extra: Any) -> bytes:
    return json.dumps({"inputs": GOOD_INPUTS if inputs is None else inputs, **extra}).encode()


def infer_binary() -> tuple[bytes, int]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": f"INPUT{i}",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
                for i in range(2)
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return head + struct.pack("<8f", *range(8)), len(head)


def _post(target: bytes, body: bytes, *extra: tuple[bytes, bytes]) -> Request:
    headers = [(b"Host", b"fuzz"), (b"Content-Length", b"%d" % len(body)), *extra]
    return Request(b"POST", target, headers=headers, body=body)


def base_request(rng: random.Random) -> Request:
    """One valid request the mutations start from."""
    kind = rng.randrange(9)
    if kind == 0:
        path = rng.choice([b"/v2/health/ready", b"/v2", b"/v2/models/addsub", b"/metrics"])
        return Request(b"GET", path, headers=[(b"Host", b"fuzz")])
    if kind == 1:
        return _post(b"/v2/models/addsub/infer", infer_json())
    if kind == 2:
        body, head = infer_binary()
        return _post(
            b"/v2/models/addsub/infer",
            body,
            (b"Inference-Header-Content-Length", b"%d" % head),
            (b"Content-Type", b"application/octet-stream"),
        )
    if kind == 3:
        req = _post(b"/v2/models/addsub/infer", infer_json())
        req.headers = [(b"Host", b"fuzz"), (b"Transfer-Encoding", b"chunked")]
        req.chunked = True
        return req
    if kind == 4:
        encoding = rng.choice([b"gzip", b"deflate"])
        packed = gzip.compress(infer_json()) if encoding == b"gzip" else zlib.compress(infer_json())
        return _post(
            b"/v2/models/addsub/infer",
            packed,
            (b"Content-Encoding", encoding),
            (b"Accept-Encoding", b"gzip"),
        )
    if kind == 5:
        return _post(b"/v2/repository/index", b'{"ready": true}')
    if kind == 6:
        return _post(
            b"/v2/models/strings/infer",
            infer_json(
                [{"name": "INPUT0", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]}]
            ),
        )
    if kind == 7:
        return _post(
            b"/v2/models/batched/infer",
            infer_json(
                [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]
            ),
        )
    return _post(b"/v2/trace/setting", b'{"trace_rate": "1000"}')


# -- mutations -----------------------------------------------------------------------------------


def _mutate_json(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """Replace, drop or retype one element somewhere in a JSON value."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.25:
            out[rng.choice(["id", "parameters", "outputs", "data", "shape", "x"])] = _random_json(
                rng
            )
        else:
            out[key] = _mutate_json(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 6:
        out_list = list(value)
        at = rng.randrange(len(out_list))
        roll = rng.random()
        if roll < 0.15:
            del out_list[at]
        elif roll < 0.3:
            out_list.insert(at, _random_json(rng))
        elif roll < 0.35:
            out_list = out_list * rng.randint(2, 50)
        else:
            out_list[at] = _mutate_json(out_list[at], rng, depth + 1)
        return out_list
    return _random_json(rng)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(EDGE_NUMBERS) if rng.random() < 0.7 else rng.randint(-(2**70), 2**70)
    if roll < 0.6:
        return rng.choice(EDGE_STRINGS)
    if roll < 0.7:
        return rng.choice([None, True, False])
    if roll < 0.85 and depth < 3:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3:
        return {rng.choice(EDGE_STRINGS): _random_json(rng, depth + 1) for _ in range(3)}
    return None


def _set_header(req: Request, name: bytes, value: bytes) -> None:
    req.headers = [(n, v) for n, v in req.headers if n.lower() != name.lower()]
    req.headers.append((name, value))


def _fix_length(req: Request) -> None:
    if not req.chunked and any(n.lower() == b"content-length" for n, _ in req.headers):
        _set_header(req, b"Content-Length", b"%d" % len(req.body))


def mutate(req: Request, rng: random.Random) -> tuple[Request, str]:
    """Apply one structural mutation; returns the request and the mutation's name."""
    choice = rng.randrange(22)
    if choice == 0:
        req.method = rng.choice(
            [
                b"PUT",
                b"DELETE",
                b"HEAD",
                b"OPTIONS",
                b"PATCH",
                b"CONNECT",
                b"get",
                b"G\x00T",
                b"X" * 200,
                b"",
            ]
        )
        return req, "method"
    if choice == 1:
        req.target = rng.choice(
            [
                b"/v2/" + b"a" * rng.choice([100, 9000, 70000]),
                b"*",
                b"http://x/v2/health/ready",
                b"/v2/models/%zz/infer",
                b"/v2/models/%00/infer",
                b"/v2/../../etc/passwd",
                b"/v2/models/addsub/versions/99999999999999999999/infer",
                b"",
                b"/v2/models/a b",
                b"/v2/models/addsub/infer?x=1&y",
                b"/v2/repository/models/..%2F..%2Fx/load",
            ]
        )
        return req, "target"
    if choice == 2:
        req.version = rng.choice(
            [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/9.9", b"", b"http/1.1"]
        )
        return req, "version"
    if choice == 3:
        values = [
            b"-1",
            b"+5",
            b"0x10",
            b" 5 ",
            b"99999999999999999999",
            b"1, 2",
            b"abc",
            b"%d" % (len(req.body) + rng.randint(1, 50)),
            b"%d" % max(0, len(req.body) - 3),
        ]
        _set_header(req, b"Content-Length", rng.choice(values))
        return req, "content-length"
    if choice == 4:
        req.headers.append((b"Content-Length", b"%d" % (len(req.body) + 1)))
        req.headers.append((b"Content-Length", b"%d" % len(req.body)))
        return req, "duplicate content-length"
    if choice == 5:
        req.headers.append(
            (
                b"Transfer-Encoding",
                rng.choice(
                    [
                        b"chunked",
                        b"gzip",
                        b"gzip, chunked",
                        b"identity",
                        b"chunked, chunked",
                        b"xchunked",
                    ]
                ),
            )
        )
        return req, "transfer-encoding"
    if choice == 6:
        n = rng.choice([100, 1000, 5000])
        req.headers.extend((b"X-F%d" % i, b"v") for i in range(n))
        return req, "many headers"
    if choice == 7:
        req.headers.append((b"X-Big", b"v" * rng.choice([9000, 70000, 300000])))
        return req, "huge header"
    if choice == 8:
        req.headers.append(
            rng.choice(
                [
                    (b"Bad Name", b"x"),
                    (b"X-Nul", b"a\x00b"),
                    (b"X-Fold", b"a\r\n folded"),
                    (b"", b"empty"),
                    (b"X-Ctl", b"\x01\x7f"),
                    (b"Host", b"second"),
                ]
            )
        )
        return req, "bad header"
    if choice == 9:
        req.eol = rng.choice([b"\n", b"\r", b"\r\r\n"])
        return req, "line endings"
    if choice == 10 and req.body:
        try:
            value = json.loads(req.body)
        except ValueError:
            value = None
        if value is not None:
            req.body = json.dumps(_mutate_json(value, rng)).encode()
            _fix_length(req)
            return req, "json body"
    if choice == 11 and req.body:
        body = bytearray(req.body)
        for _ in range(rng.randint(1, 6)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        req.body = bytes(body)
        _fix_length(req)
        return req, "body bytes"
    if choice == 12:
        _set_header(
            req,
            b"Inference-Header-Content-Length",
            rng.choice(
                [
                    b"-1",
                    b"0",
                    b"abc",
                    b"999999999",
                    b"%d" % len(req.body),
                    b"%d" % (len(req.body) + 1),
                    b"18446744073709551616",
                    b"",
                ]
            ),
        )
        return req, "inference-header-content-length"
    if choice == 13:
        _set_header(
            req,
            b"Content-Encoding",
            rng.choice([b"gzip", b"deflate", b"br", b"x", b"gzip, gzip", b"identity", b""]),
        )
        if rng.random() < 0.5:
            req.body = gzip.compress(b"{" * rng.choice([10, 10**6]))
            _fix_length(req)
        return req, "content-encoding"
    if choice == 14:
        _set_header(req, b"Connection", rng.choice([b"close", b"keep-alive", b"upgrade", b"x"]))
        return req, "connection"
    if choice == 15:
        _set_header(req, b"Expect", rng.choice([b"100-continue", b"200-ok"]))
        return req, "expect"
    if choice == 16:
        req.headers.append((b"Upgrade", rng.choice([b"h2c", b"websocket"])))
        req.headers.append((b"HTTP2-Settings", b"AAMAAABkAAQAoAAAAAIAAAAA"))
        return req, "upgrade"
    if choice == 17:
        req.headers = [(n, v) for n, v in req.headers if n.lower() != b"host"]
        return req, "no host"
    if choice == 18:
        req.body = req.body + b"\x00" * rng.choice([1, 1000, 70000])
        _fix_length(req)
        return req, "long body"
    if choice == 19:
        _set_header(req, b"Accept-Encoding", rng.choice([b"gzip;q=0", b"*;q=1.5", b"br", b",,,"]))
        return req, "accept-encoding"
    if choice == 20:
        req.target = req.target.replace(
            b"addsub",
            rng.choice(
                [b"nope", b"repeat", b"victim", b"strings", b"batched", b"addsub/versions/1", b".."]
            ),
        )
        return req, "model"
    req.chunked = True
    _set_header(req, b"Transfer-Encoding", b"chunked")
    req.headers = [(n, v) for n, v in req.headers if n.lower() != b"content-length"]
    return req, "chunked"


def _mutate_chunked_bytes(raw: bytes, rng: random.Random) -> bytes:
    """Corrupt chunk framing: overflowing or negative sizes, extensions, missing terminators."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return raw
    body = rng.choice(
        [
            b"ffffffffffffffffffff\r\n" + body,
            b"-5\r\n" + body,
            body.replace(b"\r\n", b";ext=" + b"e" * 5000 + b"\r\n", 1),
            body[:-5],
            body.replace(b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n"),
            b"5\r\nab\r\n" + body,
            b"1\r\n{\r\n" * 3000 + body,
        ]
    )
    return head + sep + body


def build_case(rng: random.Random) -> tuple[bytes, str]:
    """The bytes of one case and a label."""
    req = base_request(rng)
    labels = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        req, label = mutate(req, rng)
        labels.append(label)
    raw = req.encode(rng)
    if req.chunked and rng.random() < 0.3:
        raw = _mutate_chunked_bytes(raw, rng)
        labels.append("chunk framing")
    if rng.random() < 0.1:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = rng.choice([b"\r\n", b"\x00", b":", b" ", b"\xff"])
            else:
                del data[at : at + rng.randint(1, 10)]
        raw = bytes(data)
        labels.append("bytes")
    if rng.random() < 0.25:  # pipelined behind a good request, or a good one behind it
        good = base_request(rng).encode(rng)
        if rng.random() < 0.5:
            raw = good + raw
            labels.append("pipelined-after-good")
        else:
            raw = raw + good
            labels.append("pipelined")
    return raw, "+".join(labels) or "valid"


# -- sending -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    answers: list[tuple[int, bytes]] = field(default_factory=list)
    closed: bool = False
    hung: bool = False
    malformed: str = ""
    """Set when the server's bytes are not a valid HTTP/1.1 response stream."""


class _Collector:
    def __init__(self, parser_ref: list[Any], out: Outcome) -> None:
        self._parser = parser_ref
        self._out = out
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._out.answers.append((self._parser[0].get_status_code(), b"".join(self._body)))


def exchange(
    port: int,
    data: bytes,
    *,
    slow: bool = False,
    answer_timeout: float = 2.0,
    close_timeout: float = 10.0,
    quiet_after_answer: float = 0.3,
    rng: random.Random | None = None,
) -> Outcome:
    """Send ``data``; read answers until the server closes, half-closing after a quiet spell."""
    out = Outcome()
    ref: list[Any] = []
    parser = httptools.HttpResponseParser(_Collector(ref, out))
    ref.append(parser)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            if slow and rng is not None:
                at = 0
                while at < len(data):
                    n = rng.randint(1, 64)
                    sock.sendall(data[at : at + n])
                    at += n
                    time.sleep(rng.uniform(0.001, 0.02))
            else:
                sock.sendall(data)
        except OSError:
            pass  # the server may close on what it has already read
        half_closed = False
        deadline = time.monotonic() + answer_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if half_closed:
                    out.hung = True
                    return out
                half_closed = True
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + close_timeout
                continue
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                out.closed = True
                return out
            if not chunk:
                out.closed = True
                return out
            seen = len(out.answers)
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                pass
            except httptools.HttpParserError as exc:
                out.malformed = f"{type(exc).__name__}: {exc}"
                return out
            if len(out.answers) > seen and not half_closed:
                deadline = time.monotonic() + quiet_after_answer
    finally:
        sock.close()
