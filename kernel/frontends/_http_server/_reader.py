"""HTTP/1.1 requests from bytes, sans-IO: httptools (llhttp) parses, this module enforces limits.

:meth:`RequestReader.feed` takes the bytes that arrived and returns what they completed:
requests (in order), a wish for ``100 Continue``, or one final :class:`Refusal` after which the
reader reads nothing more. Time comes in as an argument, so every rule is tested without a
socket or a clock.

What llhttp already refuses (malformed syntax, ``Content-Length`` together with
``Transfer-Encoding``, duplicate ``Content-Length``, a last transfer coding other than
``chunked``) becomes a 400 refusal here; what it lets through and this server does not take
(other transfer codings before ``chunked``, oversized targets and header sections, too many
header fields, bodies over the limit) is refused by the callbacks below.

Sizes are bounded while bytes arrive, not after: the request target counts as it streams in;
the header section counts each field as llhttp completes it, and every whole read that arrives
while a header section is still incomplete counts in full, so at most one read's worth of bytes
sits in the parser beyond the limit. Bodies grow with what arrived (a body that came in one
read is kept as that read's bytes: no copy), never from the announced ``Content-Length``.
"""

from __future__ import annotations

import logging

import httptools
import orjson

from ._types import HttpLimits, HttpRequest, Reply

__all__ = ["CONTINUE", "Continue", "Received", "Refusal", "RequestReader", "error_reply"]

log = logging.getLogger("kernel.frontends.http")


def error_reply(status: int, message: str) -> Reply:
    """Triton's ``{"error": "<message>"}`` body with ``status``."""
    return Reply(
        status, [(b"content-type", b"application/json")], [orjson.dumps({"error": message})]
    )


class Received:
    """A complete request; ``head`` marks a ``HEAD`` request (answered without a body),
    ``http10`` an HTTP/1.0 one (a streaming reply to it cannot be chunked)."""

    __slots__ = ("head", "http10", "keep_alive", "request")

    def __init__(
        self, request: HttpRequest, keep_alive: bool, head: bool, http10: bool = False
    ) -> None:
        self.request = request
        self.keep_alive = keep_alive
        self.head = head
        self.http10 = http10


class Continue:
    """The client sent ``Expect: 100-continue`` and waits for a go-ahead before its body."""

    __slots__ = ()


CONTINUE = Continue()


class Refusal:
    """The last answer on this connection: sent after the requests before it, then close."""

    __slots__ = ("reply",)

    def __init__(self, reply: Reply) -> None:
        self.reply = reply


Event = Received | Continue | Refusal


_NAMES = {
    spelling: spelling.decode().lower()
    for name in (
        b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Content-Type",
        b"Content-Length", b"Content-Encoding", b"Connection", b"Transfer-Encoding", b"Expect",
        b"Inference-Header-Content-Length", b"Authorization", b"Traceparent",
    )
    for spelling in (name, name.lower())
}  # fmt: skip
"""Common header names as clients spell them, lower-cased once (others as they come)."""


class _Repeat:
    """A read that parsed to exactly one whole request, its body aside (see ``_remember``)."""

    __slots__ = ("head", "head_method", "request", "size")

    def __init__(
        self, head: bytes, size: int, request: tuple[str, str, dict[str, str]], head_method: bool
    ) -> None:
        self.head = head
        """The read's bytes before the body: request line, header section, blank line."""
        self.size = size
        """The whole read's length (the header section's Content-Length after ``head``)."""
        self.request = request
        self.head_method = head_method
        """A ``HEAD`` request (served as ``GET``, answered without a body)."""


class _RefusedError(Exception):
    """Raised inside a parser callback to stop parsing at once."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestReader:
    """One connection's request stream (sans-IO: bytes in, :data:`Event` objects out)."""

    def __init__(self, limits: HttpLimits) -> None:
        self._limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._now = 0.0
        self.done = False
        """A refusal (or a protocol upgrade) ended the stream: further bytes are ignored."""
        self.head_started: float | None = None
        """When the first byte of a request whose header section is incomplete arrived."""
        self.in_message = False
        """Part of a request arrived, not all of it (an idle connection has none)."""
        # the request being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_counted = 0  # target and header fields as llhttp completed them
        self._head_raw = 0  # whole reads that arrived while the header section was incomplete
        self._header_count = 0
        self._begun = 0  # requests begun so far
        self._body: bytes | bytearray = b""
        self._body_size = 0
        self._repeat: _Repeat | None = None

    def feed(self, data: bytes, now: float) -> list[Event]:
        """Parse ``data`` (arrived at ``now``) and return the events it completed, in order."""
        if self.done:
            return []
        repeat = self._repeat
        if repeat is not None and len(data) == repeat.size and data.startswith(repeat.head):
            # the same bytes as a read llhttp parsed before, from the same (idle) state
            self._begun += 1
            method, path, headers = repeat.request
            body = data[len(repeat.head) :]
            request = HttpRequest(method, path, headers.copy(), body)
            return [Received(request, True, repeat.head_method)]
        self._repeat = None
        idle = not self.in_message
        self._now = now
        events: list[Event] = []
        self._events = events
        head_before = self.head_started is not None
        begun = self._begun
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _RefusedError):
                self.refuse(refused.status, refused.message)
            else:  # a bug here: answer it as one, never let it escape into the event loop
                log.error("HTTP request parsing failed", exc_info=refused)
                self.refuse(500, "failed to parse the HTTP request")
        except httptools.HttpParserUpgrade:
            # No protocol upgrades (h2c, websocket): answer the request in HTTP/1.1, then close.
            self.done = True
            for event in reversed(events):
                if isinstance(event, Received):
                    event.keep_alive = False
                    break
        except httptools.HttpParserError as exc:
            self.refuse(400, f"malformed HTTP request: {exc}")
        else:
            if head_before and self.head_started is not None and self._begun == begun:
                # the whole read belongs to one header section still incomplete
                self._head_raw += len(data)
                if self._head_raw > self._limits.max_header_bytes:
                    self.refuse(431, self._header_size_message())
            elif idle and not self.in_message and len(events) == 1 and self._begun == begun + 1:
                self._remember(data, events[0])
        return events

    def _remember(self, data: bytes, event: Event) -> None:
        """Keep what ``data``, one whole request read from the idle state, parsed to.

        Clients repeat their requests byte for byte but for the body (perf_analyzer, a client
        sending tensors of one shape): llhttp would parse the same header section to the same
        request again, from the same state, under the same limits. Only a plain keep-alive
        HTTP/1.1 request with a ``Content-Length`` is remembered (no ``Expect``, no upgrade,
        no transfer coding), so nothing but a request can come out of it; any other read clears it.
        """
        if type(event) is not Received or not event.keep_alive or event.http10:
            return
        request = event.request
        headers = request.headers
        length = headers.get("content-length")
        if (
            length is None
            or "transfer-encoding" in headers
            or "expect" in headers
            or "upgrade" in headers
            or len(request.body) != int(length)
        ):
            return
        # The header section ends at the first blank line (llhttp took the whole read as this
        # one request, so the body is the rest; leading blank lines would leave a rest longer
        # than the body, and are not remembered).
        end = data.find(b"\r\n\r\n") + 4
        if end < 4 or len(data) - end != len(request.body):
            return
        self._repeat = _Repeat(
            data[:end], len(data), (request.method, request.path, headers.copy()), event.head
        )

    def refuse(self, status: int, message: str) -> None:
        """End the stream with an error answer (for the connection's own timeouts too)."""
        if self.done:
            return
        self.done = True
        self.head_started = None
        self.in_message = False
        self._url, self._headers, self._body = b"", {}, b""  # nothing more to hold on to
        self._events.append(Refusal(error_reply(status, message)))

    def _header_size_message(self) -> str:
        return (
            "request header section is larger than the"
            f" {self._limits.max_header_bytes} bytes this server accepts"
        )

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begun += 1
        self.in_message = True
        self.head_started = self._now
        self._url = b""
        self._headers = {}
        self._head_counted = 0
        self._head_raw = 0
        self._header_count = 0
        self._body = b""
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        if len(self._url) + len(url) > self._limits.max_url:
            raise _RefusedError(
                414,
                f"request URL is longer than the {self._limits.max_url} bytes this server accepts",
            )
        self._url += url
        self._head_counted += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # the hot path: one combined check per field
        counted = self._head_counted + len(name) + len(value) + 4
        self._head_counted = counted
        count = self._header_count + 1
        self._header_count = count
        if counted > self._max_header_bytes or count > self._max_headers:
            self._header_limit_exceeded(count)
        key = _NAMES.get(name) or name.decode("latin-1").lower()
        headers = self._headers
        if key in headers and key == "transfer-encoding":
            # one list, however many fields carry it
            headers[key] += ", " + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")

    def _header_limit_exceeded(self, count: int) -> None:
        limits = self._limits
        if count > limits.max_headers:
            raise _RefusedError(
                431,
                f"request has more than the {limits.max_headers} header fields this server accepts",
            )
        raise _RefusedError(431, self._header_size_message())

    def on_headers_complete(self) -> None:
        self.head_started = None
        headers = self._headers
        coding = headers.get("transfer-encoding")
        if coding is not None:
            # llhttp already refuses Content-Length with it, and a last coding other than
            # chunked; no other transfer coding is implemented (RFC 9112 section 6.1).
            codings = [c.strip().lower() for c in coding.split(",")]
            if codings != ["chunked"]:
                raise _RefusedError(400, f"unsupported transfer coding: '{coding}'")
        length = headers.get("content-length")
        expected = 0 if coding is None else -1
        if length is not None:
            expected = int(length)  # llhttp has already refused a malformed one
            max_body = self._limits.max_body
            if expected > max_body:
                raise _RefusedError(
                    400,
                    f"request body of {expected} bytes is larger than the {max_body} bytes"
                    " this server accepts (http_max_input_bytes)",
                )
        if expected and headers.get("expect", "").lower() == "100-continue":
            self._events.append(CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._limits.max_body:  # chunked: no size announced
            raise _RefusedError(
                400,
                f"request body is larger than the {self._limits.max_body} bytes this server"
                " accepts (http_max_input_bytes)",
            )
        body = self._body
        if not body:
            self._body = chunk  # the usual case: the whole body arrived at once
        elif isinstance(body, bytearray):
            body += chunk
        else:
            grown = bytearray(body)
            grown += chunk
            self._body = grown

    def on_message_complete(self) -> None:
        self.in_message = False
        parser = self._parser
        url = self._url
        # origin-form ("/v2/...?q") is the norm; absolute-form needs the URL parser
        if url[:1] == b"/":
            path = url.partition(b"?")[0]
        else:
            try:
                path = httptools.parse_url(url).path
            except httptools.HttpParserInvalidURLError:
                raise _RefusedError(400, "malformed HTTP request: invalid URL") from None
        method = parser.get_method()
        head = method == b"HEAD"
        request = HttpRequest(
            "GET" if head else method.decode("latin-1"),
            (path or b"/").decode("latin-1"),
            self._headers,
            self._body,
        )
        http10 = parser.get_http_version() == "1.0"
        self._events.append(Received(request, parser.should_keep_alive(), head, http10))
