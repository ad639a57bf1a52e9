"""gRPC over HTTP/2 on the wire: frame layout, the gRPC message prefix, status trailers.

Only formats and constants live here (RFC 9113 and gRPC's "PROTOCOL-HTTP2" document); the
protocol's state (streams, windows, settings) is in :mod:`._connection`, the gRPC semantics in
:mod:`._rpc`.
"""

from __future__ import annotations

import struct
from urllib.parse import quote

from kernel.frontends._grpc._hpack import encode

__all__ = [
    "ACK",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONTINUATION",
    "DATA",
    "DEADLINE_EXCEEDED",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_WINDOW",
    "END_HEADERS",
    "END_STREAM",
    "ENHANCE_YOUR_CALM",
    "FLOW_CONTROL_ERROR",
    "FRAME",
    "FRAME_SIZE_ERROR",
    "GOAWAY",
    "HEADERS",
    "INTERNAL",
    "INTERNAL_ERROR",
    "MAX_WINDOW",
    "MESSAGE",
    "NO_ERROR",
    "OK",
    "OK_TRAILERS",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PROTOCOL_ERROR",
    "PUSH_PROMISE",
    "REFUSED_STREAM",
    "RESOURCE_EXHAUSTED",
    "RESPONSE_HEADERS",
    "RST_STREAM",
    "SETTINGS",
    "STREAM_CLOSED",
    "UNIMPLEMENTED",
    "UNKNOWN",
    "WINDOW_UPDATE",
    "Http2ConnectionError",
    "frame",
    "headers_frames",
    "status_trailers",
    "timeout_seconds",
    "unpad",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
MESSAGE = struct.Struct(">BL")  # gRPC message prefix: compressed flag, length

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0, 1, 2, 3, 6
STREAM_CLOSED, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 5, 7, 8, 9, 11

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = (1 << 31) - 1

# the gRPC status codes the transport answers with by itself
OK, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 0, 2, 4, 8, 12, 13

RESPONSE_HEADERS = encode(
    [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-accept-encoding", b"identity,deflate,gzip"),
    ]
)
OK_TRAILERS = encode([(b"grpc-status", b"0")])
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header, then ``payload``."""
    size = len(payload)
    return FRAME.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id) + payload


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """A header block as HEADERS (and CONTINUATION frames when it exceeds ``max_frame``)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    out += [frame(CONTINUATION, 0, stream_id, p) for p in parts[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


def status_trailers(status: int, message: str | None) -> bytes:
    """The header block ending an rpc: ``grpc-status`` and, percent-encoded, ``grpc-message``."""
    if status == OK and not message:
        return OK_TRAILERS
    fields = [(b"grpc-status", str(status).encode())]
    if message:
        # the grpc-message header is percent-encoded UTF-8 (printable ASCII passes as is)
        fields.append(
            (b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode())
        )
    return encode(fields)


def timeout_seconds(value: bytes) -> float | None:
    """A ``grpc-timeout`` header value in seconds (``None`` when malformed: no deadline)."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    if unit is None or not value[:-1].isdigit() or len(value) > 9:  # at most 8 digits
        return None
    return int(value[:-1]) * unit


class Http2ConnectionError(Exception):
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def unpad(payload: memoryview) -> memoryview:
    """The payload of a PADDED frame without its pad length and padding."""
    if not payload:
        raise Http2ConnectionError(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise Http2ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
