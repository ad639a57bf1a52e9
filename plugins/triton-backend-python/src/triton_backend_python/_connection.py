"""The server's end of a model process's socket, as an ``asyncio.Protocol``."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import cast

__all__ = ["Connection"]

_LEN = struct.Struct("<I")


class Connection(asyncio.Protocol):
    """The server's end of a model process's socket.

    Frames are parsed as bytes arrive (several per read when the process answered several
    batches), and what the server sends in one turn of the event loop leaves in one write: one
    system call and at most one wake-up of the model process for every request that came in
    that turn, instead of one each.
    """

    def __init__(self, on_frame: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._out: list[bytes | memoryview] = []
        self._flushing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        offset = 0
        while size - offset >= 4:
            (length,) = _LEN.unpack_from(buffer, offset)
            end = offset + 4 + length
            if end > size:
                break
            self._on_frame(bytes(buffer[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._out.clear()
        self._on_lost()

    def write(self, parts: list[bytes | memoryview]) -> None:
        """Queue a frame; it leaves with the others of this loop turn."""
        self._out.extend(parts)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()
