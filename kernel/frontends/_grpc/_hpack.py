"""HPACK (RFC 7541) as the gRPC transport needs it: a full decoder, and constant header blocks.

Decoding is stateful (the peer's encoder fills a dynamic table that later blocks refer to), so
every header block of a connection goes through one :class:`Decoder`, in order. The static
table and the Huffman code come from the ``hpack`` package; the decoding loop is written here
because it is on every request's path and the generic one costs ~20 us per block on this
project's benchmark machine.

Encoding never touches the peer's dynamic table: every field is a "literal without indexing"
(or an indexed static entry), so the server's header blocks are plain constants.

The decoder enforces RFC 7541's rules (a dynamic table size update only at the start of a block and
never above the advertised SETTINGS_HEADER_TABLE_SIZE) and the connection's limits while it
decodes: past ``max_fields`` it keeps decoding, so the dynamic table stays in step with the peer's,
but stops keeping fields (a small block of indexed references cannot expand into megabytes: each
kept field is at most a table entry or a literal of the block itself), and a list past
``max_list_size`` (RFC 7541 sizes, name + value + 32 per field) is dropped. Field names and values
a literal brings are checked against RFC 9113 section 8.2.1 once, when they are decoded: an indexed
reference reuses an already checked pair, so the common case costs nothing.
"""

from __future__ import annotations

import re

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["DEFAULT_TABLE_SIZE", "Decoder", "HpackError", "encode"]

DEFAULT_TABLE_SIZE = 4096
"""SETTINGS_HEADER_TABLE_SIZE before (and unless) the settings say otherwise."""

_STATIC: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_COUNT = len(_STATIC)
_ENTRY_OVERHEAD = 32
_STATIC_SIZES = tuple(len(name) + len(value) + _ENTRY_OVERHEAD for name, value in _STATIC)
_BAD_NAME = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]")  # lowercase tchar (pseudo ':' aside)
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


class HpackError(Exception):
    """A header block that cannot be decoded: a connection error (COMPRESSION_ERROR)."""


class Decoder:
    """The decoding side of one connection's header compression.

    After :meth:`decode`, ``list_size`` is the block's decoded size (RFC 7541 sizes) and
    ``malformed`` says why a field breaks RFC 9113 section 8.2.1 (``None`` when none does).
    ``generation`` changes whenever the dynamic table does: a block that left it unchanged
    decodes to the same fields while it stays the same (a caller may keep the result).
    """

    __slots__ = (
        "_bad",
        "_dynamic",
        "_max_size",
        "_size",
        "_sizes",
        "generation",
        "list_size",
        "malformed",
    )

    def __init__(self, max_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._dynamic: list[tuple[bytes, bytes]] = []  # newest first
        self._sizes: list[int] = []  # of each dynamic entry (RFC 7541 sizes)
        self._size = 0
        self._max_size = max_size
        self._bad: set[tuple[bytes, bytes]] = set()  # malformed entries still in the table
        self.generation = 0
        self.list_size = 0
        self.malformed: str | None = None

    def decode(
        self,
        block: bytes | memoryview,
        max_list_size: int = 1 << 62,
        max_fields: int = 1 << 62,
    ) -> list[tuple[bytes, bytes]]:
        """The header fields of one complete header block, in order.

        Past ``max_fields`` or ``max_list_size`` the fields are dropped (decoding goes on, for
        the table's sake) and ``list_size`` exceeds ``max_list_size``.

        :raises HpackError: on any malformed representation (a connection error).
        """
        fields: list[tuple[bytes, bytes]] = []
        append = fields.append
        self.malformed = None
        pos, end = 0, len(block)
        room = max_fields
        size = 0
        bad = self._bad
        dynamic = self._dynamic
        sizes = self._sizes
        try:
            while pos < end:
                byte = block[pos]
                if byte & 0x80:  # indexed field (the common case: inlined)
                    index = byte & 0x7F
                    if index == 0x7F:
                        index, pos = _integer(block, pos, 7)
                    else:
                        pos += 1
                    if 0 < index <= _STATIC_COUNT:
                        field = _STATIC[index - 1]
                        size += _STATIC_SIZES[index - 1]
                    elif index:
                        field = dynamic[index - _STATIC_COUNT - 1]  # IndexError: out of range
                        size += sizes[index - _STATIC_COUNT - 1]
                        if bad and field in bad:
                            self.malformed = "a malformed header field"
                    else:
                        raise HpackError("header table index 0")
                elif byte & 0x40:  # literal with incremental indexing
                    index, pos = _integer(block, pos, 6)
                    name, value, pos = self._literal(block, pos, index)
                    field = (name, value)
                    if self._check(field):
                        bad.add(field)
                    size += self._add(field)
                elif byte & 0x20:  # dynamic table size update
                    if size:
                        raise HpackError("dynamic table size update after the first field")
                    new_size, pos = _integer(block, pos, 5)
                    if new_size > DEFAULT_TABLE_SIZE:
                        raise HpackError(f"table size {new_size} above the advertised maximum")
                    self._max_size = new_size
                    self.generation += 1
                    self._evict(0)
                    continue
                else:  # literal without indexing / never indexed
                    index, pos = _integer(block, pos, 4)
                    name, value, pos = self._literal(block, pos, index)
                    field = (name, value)
                    self._check(field)
                    size += len(name) + len(value) + _ENTRY_OVERHEAD
                if room and size <= max_list_size:
                    append(field)
                    room -= 1
                elif not room:
                    size = max(size, max_list_size + 1)  # too many fields: as too large
        except IndexError:
            raise HpackError("truncated header block or table index out of range") from None
        self.list_size = size
        if size > max_list_size:
            fields.clear()
        return fields

    def _check(self, field: tuple[bytes, bytes]) -> bool:
        """Whether a literal field breaks RFC 9113 section 8.2.1 (noted in ``malformed``)."""
        name, value = field
        if not name or _BAD_NAME.search(name, 1 if name[0] == 0x3A else 0):
            self.malformed = f"malformed header name {name[:64]!r}"
            return True
        if value and _BAD_VALUE.search(value):
            self.malformed = f"malformed value of header {name[:64]!r}"
            return True
        return False

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if index == 0 or dynamic >= len(self._dynamic):
            raise HpackError(f"header table index {index} out of range")
        return self._dynamic[dynamic]

    def _literal(self, block: bytes | memoryview, pos: int, index: int) -> tuple[bytes, bytes, int]:
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return name, value, pos

    def _add(self, field: tuple[bytes, bytes]) -> int:
        """Add ``field`` to the dynamic table; return its size."""
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        self.generation += 1
        self._evict(size)
        if size <= self._max_size:
            self._dynamic.insert(0, field)
            self._sizes.insert(0, size)
            self._size += size
        return size

    def _evict(self, room: int) -> None:
        while self._dynamic and self._size + room > self._max_size:
            self._bad.discard(self._dynamic.pop())
            self._size -= self._sizes.pop()


def _integer(block: bytes | memoryview, pos: int, prefix_bits: int) -> tuple[int, int]:
    mask = (1 << prefix_bits) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too large")


def _string(block: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise HpackError("truncated string")
    data = bytes(block[pos:end])
    if huffman:
        try:
            data = decode_huffman(data)
        except Exception as exc:  # the library's own error type
            raise HpackError(f"bad Huffman string: {exc}") from None
    return data, end


def _encode_integer(value: int, prefix_bits: int, flags: int) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes([flags | value])
    out = bytearray([flags | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATIC_INDEX = {entry: i + 1 for i, entry in reversed(list(enumerate(_STATIC)))}
_STATIC_NAME_INDEX = {name: i + 1 for i, (name, _) in reversed(list(enumerate(_STATIC)))}


def encode(fields: list[tuple[bytes, bytes]]) -> bytes:
    """A header block that leaves the peer's dynamic table alone (see the module doc)."""
    out = bytearray()
    for name, value in fields:
        full = _STATIC_INDEX.get((name, value))
        if full is not None:
            out += _encode_integer(full, 7, 0x80)
            continue
        name_index = _STATIC_NAME_INDEX.get(name, 0)
        out += _encode_integer(name_index, 4, 0x00)
        if not name_index:
            out += _encode_integer(len(name), 7, 0x00) + name
        out += _encode_integer(len(value), 7, 0x00) + value
    return bytes(out)
