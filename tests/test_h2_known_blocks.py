"""Header blocks the HTTP/2 core remembers decoded (``Connection._header_block``): a client
repeats each call's header block byte for byte once its dynamic table holds the fields, so the
core keeps what such a block decoded to while the table stays as it was. These tests check the
answers are those of a full decode: a table that changed (a new entry, a size update) decodes
the same bytes anew, and a malformed request is refused every time."""

from __future__ import annotations

from typing import Any

from hyperframe.frame import HeadersFrame, RstStreamFrame, SettingsFrame

from kernel.frontends._grpc._connection import Connection
from kernel.frontends._grpc._wire import PREFACE

_BASE = b"\x83\x86\x04\x02/a"  # :method POST, :scheme http, :path /a (static name, no indexing)
_BASE_FIELDS = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a")]
PROTOCOL_ERROR, COMPRESSION_ERROR = 1, 9


def _indexing(value: bytes) -> bytes:
    """A literal ``x-a: value`` with incremental indexing (it becomes dynamic entry 62)."""
    return b"\x40\x03x-a" + bytes([len(value)]) + value


_REFERENCE = _BASE + b"\xbe"  # the same bytes every time: dynamic entry 62, whatever it holds


class _Events:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.events.append((name, *args))


def _core() -> tuple[Connection, _Events]:
    events = _Events()
    core = Connection(events)  # type: ignore[arg-type]
    core.initiate()
    core.receive(PREFACE + SettingsFrame(0).serialize())
    core.data_to_send()
    return core, events


def _send(core: Connection, stream_id: int, block: bytes) -> None:
    frame = HeadersFrame(stream_id, block, flags={"END_HEADERS", "END_STREAM"})
    core.receive(frame.serialize())


def _requests(events: _Events) -> dict[int, list[tuple[bytes, bytes]]]:
    return {e[1]: e[2] for e in events.events if e[0] == "request"}


def test_a_repeated_block_follows_the_table_it_refers_to() -> None:
    core, events = _core()
    _send(core, 1, _BASE + _indexing(b"1"))
    _send(core, 3, _REFERENCE)
    _send(core, 5, _REFERENCE)  # remembered
    _send(core, 7, _BASE + _indexing(b"2"))  # entry 62 is now x-a: 2
    _send(core, 9, _REFERENCE)
    _send(core, 11, _REFERENCE)
    requests = _requests(events)
    one, two = [*_BASE_FIELDS, (b"x-a", b"1")], [*_BASE_FIELDS, (b"x-a", b"2")]
    assert [requests[i] for i in (1, 3, 5, 7, 9, 11)] == [one, one, one, two, two, two]
    requests[11].append((b"mutated", b"by the application"))
    _send(core, 13, _REFERENCE)
    assert _requests(events)[13] == two  # each request gets its own list


def test_a_table_size_update_forgets_the_blocks() -> None:
    core, events = _core()
    _send(core, 1, _BASE + _indexing(b"1"))
    _send(core, 3, _REFERENCE)
    _send(core, 5, b"\x20" + _BASE)  # the table is emptied: entry 62 is gone
    assert not core.closed
    _send(core, 7, _REFERENCE)
    assert core.closed
    assert events.events[-1][:2] == ("terminated", COMPRESSION_ERROR)
    assert sorted(_requests(events)) == [1, 3, 5]


def _resets(core: Connection) -> dict[int, int]:
    data, resets = core.data_to_send(), {}
    view = memoryview(data)
    while view:
        length = int.from_bytes(view[:3], "big")
        if view[3] == 3:  # RST_STREAM
            frame = RstStreamFrame(int.from_bytes(view[5:9], "big") & 0x7FFFFFFF)
            frame.parse_body(view[9 : 9 + length])
            resets[frame.stream_id] = frame.error_code
        view = view[9 + length :]
    return resets


def test_a_malformed_request_is_refused_every_time() -> None:
    core, events = _core()
    no_path = b"\x83\x86"  # :method and :scheme, no :path
    bad_value = _BASE + b"\x00\x03x-b\x02a\n"  # a value with LF
    for stream_id in (1, 3, 5):
        _send(core, stream_id, no_path)
    for stream_id in (7, 9, 11):
        _send(core, stream_id, bad_value)
    assert _resets(core) == dict.fromkeys((1, 3, 5, 7, 9, 11), PROTOCOL_ERROR)
    assert not _requests(events)
    _send(core, 13, _BASE)
    assert _requests(events) == {13: _BASE_FIELDS}
