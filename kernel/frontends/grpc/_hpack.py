"""HPACK (RFC 7541) as the gRPC transport needs it: a full decoder, and constant header blocks.

Decoding is stateful (the peer's encoder fills a dynamic table that later blocks refer to), so
every header block of a connection goes through one :class:`Decoder`, in order. The static
table and the Huffman code come from the ``hpack`` package; the decoding loop is written here
because it is on every request's path and the generic one costs ~20 us per block on this
project's benchmark machine.

Encoding never touches the peer's dynamic table: every field is a "literal without indexing"
(or an indexed static entry), so the server's header blocks are plain constants.
"""

from __future__ import annotations

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["DEFAULT_TABLE_SIZE", "Decoder", "HpackError", "encode"]

DEFAULT_TABLE_SIZE = 4096
"""SETTINGS_HEADER_TABLE_SIZE before (and unless) the settings say otherwise."""

_STATIC: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_COUNT = len(_STATIC)
_ENTRY_OVERHEAD = 32


class HpackError(Exception):
    """A header block that cannot be decoded: a connection error (COMPRESSION_ERROR)."""


class Decoder:
    """The decoding side of one connection's header compression."""

    __slots__ = ("_dynamic", "_max_size", "_size")

    def __init__(self, max_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._dynamic: list[tuple[bytes, bytes]] = []  # newest first
        self._size = 0
        self._max_size = max_size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The header fields of one complete header block, in order.

        :raises HpackError: on any malformed representation.
        """
        fields: list[tuple[bytes, bytes]] = []
        pos, end = 0, len(block)
        try:
            while pos < end:
                byte = block[pos]
                if byte & 0x80:  # indexed field
                    index, pos = _integer(block, pos, 7)
                    fields.append(self._entry(index))
                elif byte & 0x40:  # literal with incremental indexing
                    index, pos = _integer(block, pos, 6)
                    name, value, pos = self._literal(block, pos, index)
                    fields.append((name, value))
                    self._add(name, value)
                elif byte & 0x20:  # dynamic table size update
                    size, pos = _integer(block, pos, 5)
                    if size > DEFAULT_TABLE_SIZE:
                        raise HpackError(f"table size {size} above the advertised maximum")
                    self._max_size = size
                    self._evict(0)
                else:  # literal without indexing / never indexed
                    index, pos = _integer(block, pos, 4)
                    name, value, pos = self._literal(block, pos, index)
                    fields.append((name, value))
        except IndexError:
            raise HpackError("truncated header block") from None
        return fields

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if index == 0 or dynamic >= len(self._dynamic):
            raise HpackError(f"header table index {index} out of range")
        return self._dynamic[dynamic]

    def _literal(self, block: bytes, pos: int, index: int) -> tuple[bytes, bytes, int]:
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return name, value, pos

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        self._evict(size)
        if size <= self._max_size:
            self._dynamic.insert(0, (name, value))
            self._size += size

    def _evict(self, room: int) -> None:
        while self._dynamic and self._size + room > self._max_size:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
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


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
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
