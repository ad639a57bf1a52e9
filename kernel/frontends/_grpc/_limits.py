"""The HTTP/2 connection's limits: every bound a client could otherwise push, with its default.

One :class:`Http2Limits` object configures one server's connections (:mod:`._connection`
enforces it, :mod:`._server` applies its keepalive part). Each default is chosen here, with the
reason, so the operator-facing flags (``kernel serve --grpc-...``) only override them.

Budgets (:class:`Budget`) are token buckets: ``burst`` events at once, refilled at ``rate`` per
second. They bound what a client can make the server do without making progress (resetting
streams, pinging, settings, empty frames); past a budget the connection ends with GOAWAY
ENHANCE_YOUR_CALM.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_CONNECTION_WINDOW",
    "DEFAULT_MAX_CONCURRENT_STREAMS",
    "DEFAULT_MAX_HEADER_LIST_SIZE",
    "DEFAULT_STREAM_WINDOW",
    "Budget",
    "Http2Limits",
]

DEFAULT_MAX_CONCURRENT_STREAMS = 100
"""RFC 9113 section 6.5.2 recommends no less than 100 so parallelism is not limited; grpc
clients queue calls past it locally, so a higher concurrency still works, on more connections
or later."""

DEFAULT_MAX_HEADER_LIST_SIZE = 16 * 1024
"""grpc core (what tritonserver runs) refuses request metadata past 16 KiB by default."""

DEFAULT_STREAM_WINDOW = 1 << 22
"""4 MiB per stream: a typical inference request crosses in one flight; a stream holds at most
this much data its handler has not read yet (plus the one message being assembled)."""

DEFAULT_CONNECTION_WINDOW = 1 << 24
"""16 MiB per connection: the bound of unread data buffered for all streams of a connection."""


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """Every bound of one HTTP/2 connection (see the module doc for why each default)."""

    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    """Advertised SETTINGS_MAX_CONCURRENT_STREAMS; a stream past it is refused (REFUSED_STREAM)."""
    max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE
    """Advertised SETTINGS_MAX_HEADER_LIST_SIZE, enforced on the decoded list (RFC 7541 sizes:
    name + value + 32 per field); past it the rpc is answered RESOURCE_EXHAUSTED."""
    max_header_fields: int = 256
    """Fields in one header list; past it, as a too large list."""
    max_header_block: int = 64 * 1024
    """Bytes of one encoded header block (HEADERS and its CONTINUATION frames); past it the
    connection ends (the block cannot be skipped without decoding it)."""
    max_continuation_frames: int = 32
    """CONTINUATION frames in one header block (64 KiB needs 4 at the default frame size)."""
    max_frame_size: int = 1 << 20
    """Advertised SETTINGS_MAX_FRAME_SIZE: large messages cross in few frames."""
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW
    credit_threshold: int = 1 << 16
    """Consumed bytes are credited back (WINDOW_UPDATE) in pieces at least this large."""
    reset_burst: int = 1000
    reset_rate: float = 33.0
    """Client RST_STREAM frames (rapid reset, CVE-2023-44487): nghttp2's figures."""
    idle_frame_burst: int = 1000
    idle_frame_rate: float = 100.0
    """Frames that make no progress (SETTINGS, PRIORITY, empty DATA without END_STREAM, empty
    CONTINUATION, unknown types, PING beyond the keepalive policy): the 2019 flood CVEs."""
    max_settings_entries: int = 32
    """Entries in one SETTINGS frame (there are 6 settings defined)."""
    recently_closed: int = 256
    """Stream ids remembered after closing (at least the newest half of this many), so late
    frames of a stream we ended are ignored and frames after END_STREAM are told apart from
    frames on idle streams."""
    write_high_water: int = 4 << 20
    write_low_water: int = 1 << 20
    """Reading pauses while more than ``write_high_water`` bytes wait to be written, and resumes
    below ``write_low_water``: a client that does not read cannot make the server buffer."""
    # keepalive, tritonserver's flags and defaults (grpc core's semantics)
    keepalive_time_ms: int = 7_200_000
    """``--grpc-keepalive-time``: a PING goes out this often (2 h)."""
    keepalive_timeout_ms: int = 20_000
    """``--grpc-keepalive-timeout``: no ACK within this -> the connection closes."""
    keepalive_permit_without_calls: bool = False
    """``--grpc-keepalive-permit-without-calls``: pings on a connection without calls are allowed
    (from the client, else they are strikes; from the server, else they are not sent)."""
    max_pings_without_data: int = 2
    """``--grpc-http2-max-pings-without-data``: keepalive PINGs the server sends while it sends
    no DATA or HEADERS (0: no limit)."""
    min_recv_ping_interval_without_data_ms: int = 300_000
    """``--grpc-http2-min-recv-ping-interval-without-data``: client PINGs closer than this while
    the server sends nothing are strikes."""
    max_ping_strikes: int = 2
    """``--grpc-http2-max-ping-strikes``: more strikes -> GOAWAY ENHANCE_YOUR_CALM
    ``too_many_pings`` (0: no limit)."""


class Budget:
    """A token bucket on an injected clock: :meth:`spend` is False once it ran dry."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._last = now

    def spend(self, now: float) -> bool:
        tokens = self._tokens + (now - self._last) * self._rate
        self._last = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
