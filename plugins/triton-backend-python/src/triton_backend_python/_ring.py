"""A one-way ring of frames in shared memory, with a doorbell to wake its reader.

Every message between the server and a model process travels through two of these (one each
way): the writer copies a frame into the ring and, if the reader sleeps, rings its doorbell
(one byte on the socket pair between the two processes); the reader drains every frame there
is, and sleeps on the doorbell only when the ring is empty. No frame goes through a socket;
a reader that finds several frames handles them in one go.

The doorbell is a socket, not an eventfd, on purpose: a socket wakes its reader with the
scheduler's "sync" hint (the waker is about to sleep), so the two processes of a request's
round trip may run on one core, one after the other, without waiting for the other core;
an eventfd's wake-up has no such hint, and on a loaded 2-core machine every round trip then
waited for a turn on the other core (measured: HTTP c=1 through the server half as fast with
eventfds as with the socket).

The ring is a ``memfd`` (anonymous shared memory, not a file in ``/dev/shm``, so it neither
takes room there nor needs unlinking) with its pages reserved up front by ``posix_fallocate``,
passed to the model process by file descriptor. One writer and one reader per ring (each side
serializes its own threads). Layout: the bytes written so far (``u64``) at 0, the bytes read so
far (``u64``) at 64, whether the reader sleeps (``u64``) at 72, frames from 128: ``u32
length``, the frame, padded to 8 bytes. A frame that would cross the end leaves a ``WRAP``
marker and starts again at the beginning. The writer publishes a frame by storing the written
count after the frame's bytes, the reader frees space by storing the read count after copying
the frame out; on x86-64 (total store order) these plain stores are seen in that order by the
other side.

Wake-ups are futex-style: a reader about to sleep says so in the ring, then looks once more
for a frame; a writer rings the doorbell only when the reader says it sleeps. A reader busy
with a batch while the next arrives costs the writer no system call. Each side puts a full
memory barrier between its store and its load (an uncontended lock: a locked instruction on
x86-64), so of the two, at least one sees the other's store: no wake-up is lost. The server's
event loop, which watches its end of the socket, counts as asleep (:meth:`Ring.watched`) except
for one more turn of the loop after it read frames while it waits for more (:meth:`Ring.awake`,
:meth:`Ring.rearm`: the same store, barrier, load). A reader may also look at the ring for a
moment before it sleeps (:meth:`Ring.ready`).

A frame too large for the ring (say, a BYTES tensor of megabytes in the message itself) goes
through a shared memory slab instead, and the ring carries where it is (``INDIRECT`` bit).

No kernel import: this runs in model processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import struct
import threading
from collections.abc import Callable, Sequence

__all__ = ["RING_CAPACITY", "Ring", "RingError", "new_ring_fd"]

RING_CAPACITY = 1 << 20
"""Bytes of frames a ring holds (frames above a quarter of it go through a slab)."""

_DATA = 128
_SLEEPING = 72
_WRAP = 0xFFFFFFFF
_INDIRECT = 0x80000000
_U32 = struct.Struct("<I")
_INDIRECT_RECORD = struct.Struct("<QQH")  # offset, size, name length (then the name)
_BARRIER = threading.Lock()


def _barrier() -> None:
    """A full memory barrier: taking an uncontended lock is a locked (fencing) instruction."""
    _BARRIER.acquire()
    _BARRIER.release()


class RingError(OSError):
    """The ring holds something no writer put there (a bug, or memory written by the model)."""


def new_ring_fd(capacity: int = RING_CAPACITY) -> int:
    """A ``memfd`` for a ring of ``capacity`` bytes, every page reserved (never a SIGBUS)."""
    fd = os.memfd_create("triton-python-ring", os.MFD_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, _DATA + capacity)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _align8(size: int) -> int:
    return (size + 7) & ~7


class Ring:
    """One side of a ring (see the module doc): :meth:`put` for the writer, :meth:`take` for
    the reader. Not thread-safe: each side holds one writer or one reader."""

    def __init__(self, fd: int, doorbell: int) -> None:
        size = os.fstat(fd).st_size
        self._mm = mmap.mmap(fd, size)
        self._view = memoryview(self._mm)
        self.capacity = size - _DATA
        self.doorbell = doorbell
        """The socket whose bytes wake the reader (the writer's end for the writer)."""
        # The counters are read and written whole (one 8-byte load or store, atomic when
        # aligned); struct.pack_into may store them a byte at a time, and a reader that saw half
        # of a new count would read what was never written.
        self._written_cell = ctypes.c_uint64.from_buffer(self._mm, 0)
        self._read_cell = ctypes.c_uint64.from_buffer(self._mm, 64)
        self._sleeping_cell = ctypes.c_uint64.from_buffer(self._mm, _SLEEPING)
        self._written = self._written_cell.value
        self._read = self._read_cell.value

    @property
    def largest_frame(self) -> int:
        """Frames above this go through a slab (:meth:`put` says so)."""
        return self.capacity // 4

    # -- writer ---------------------------------------------------------------------------------

    def put(self, parts: Sequence[bytes | memoryview], length: int) -> bool:
        """Copy one frame (``parts``, ``length`` bytes in all) in; False when there is no room
        now (the reader frees it as it reads). Call :meth:`wake` after the frames of a turn."""
        return self._put(parts, length, 0)

    def put_indirect(self, name: str, offset: int, size: int) -> bool:
        """Say that the next frame is ``size`` bytes at ``offset`` of slab ``name``."""
        encoded = name.encode()
        record = _INDIRECT_RECORD.pack(offset, size, len(encoded)) + encoded
        return self._put((record,), len(record), _INDIRECT)

    def _put(self, parts: Sequence[bytes | memoryview], length: int, flag: int) -> bool:
        capacity = self.capacity
        need = _align8(4 + length)
        written = self._written
        at = written % capacity
        skip = capacity - at if at + need > capacity else 0
        free = capacity - (written - self._read_cell.value)
        if skip + need > free:
            return False
        view = self._view
        if skip:
            _U32.pack_into(view, _DATA + at, _WRAP)
            at = 0
        _U32.pack_into(view, _DATA + at, length | flag)
        offset = _DATA + at + 4
        for part in parts:
            end = offset + len(part) if isinstance(part, bytes) else offset + part.nbytes
            view[offset:end] = part
            offset = end
        self._written = written + skip + need
        self._written_cell.value = self._written  # publish: after the frame's bytes
        return True

    def wake(self) -> None:
        """Wake the reader if it sleeps (one doorbell byte for the frames since the last).

        A full socket already holds doorbells the reader has not read: nothing to add. A
        closed one means the reader is gone; the side watching the socket learns it.
        """
        _barrier()
        if self._sleeping_cell.value:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                os.write(self.doorbell, b"\x01")

    # -- reader ---------------------------------------------------------------------------------

    def take(self, indirect: Callable[[str, int, int], bytearray]) -> bytearray | None:
        """The next frame (a copy), None when the ring is empty; ``indirect(name, offset,
        size)`` fetches a frame that went through a slab."""
        read = self._read
        written = self._written_cell.value
        if read == written:
            return None
        capacity = self.capacity
        at = read % capacity
        if capacity - at < 4 or _U32.unpack_from(self._mm, _DATA + at)[0] == _WRAP:
            read += capacity - at
            at = 0
        (length,) = _U32.unpack_from(self._mm, _DATA + at)
        flag = length & _INDIRECT
        length &= ~_INDIRECT
        if read + _align8(4 + length) > written or at + 4 + length > capacity:
            raise RingError(
                f"corrupt ring: a frame of {length} bytes at {read} (written {written},"
                f" read {self._read})"
            )
        start = _DATA + at + 4
        frame = bytearray(self._view[start : start + length])
        self._read = read + _align8(4 + length)
        self._read_cell.value = self._read  # free: after the copy
        if flag:
            offset, size, name_length = _INDIRECT_RECORD.unpack_from(frame, 0)
            name = frame[_INDIRECT_RECORD.size : _INDIRECT_RECORD.size + name_length].decode()
            return indirect(name, offset, size)
        return frame

    def ready(self) -> bool:
        """Whether a frame is there to take (one load of shared memory, no system call)."""
        return self._written_cell.value != self._read

    def wait(self) -> bool:
        """Sleep until the writer put a frame (blocking doorbell); may return early.

        Returns False when the other side closed the socket (it is gone)."""
        self._sleeping_cell.value = 1
        try:
            _barrier()
            if self._written_cell.value == self._read:
                return bool(os.read(self.doorbell, 4096))
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False
        finally:
            self._sleeping_cell.value = 0

    def watched(self) -> None:
        """Say that this reader wants a wake-up for the next frame (an event loop watches the
        socket); until :meth:`awake`, every frame rings the doorbell."""
        self._sleeping_cell.value = 1

    def awake(self) -> None:
        """Say that this reader will look at the ring without a doorbell (it is busy and
        comes back soon): the writer skips the system call. :meth:`rearm` must follow."""
        self._sleeping_cell.value = 0

    def rearm(self) -> bool:
        """Want a wake-up again (after :meth:`awake`); True when a frame came meanwhile, which
        rang no doorbell: the reader takes it now (then may say :meth:`awake` again)."""
        self._sleeping_cell.value = 1
        _barrier()
        return self._written_cell.value != self._read

    def close(self) -> None:
        del self._written_cell, self._read_cell, self._sleeping_cell
        self._view.release()
        self._mm.close()
