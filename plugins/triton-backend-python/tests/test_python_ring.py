"""The shared memory ring between the server and a model process, without processes."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from triton_backend_python._ring import Ring, new_ring_fd
from triton_backend_python._wire import SlabPool, SlabReader, decode, pack_frame, put_frame


@pytest.fixture
def doorbell() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The writer's and the reader's ends of a ring's doorbell."""
    a, b = socket.socketpair()
    b.setblocking(False)
    with a, b:
        yield a, b


@pytest.fixture
def ring_pair(doorbell: tuple[socket.socket, socket.socket]) -> Iterator[tuple[Ring, Ring]]:
    """A writer and a reader of one small ring (4 KiB), as two mappings of one memfd."""
    fd = new_ring_fd(4096)
    writer, reader = Ring(fd, doorbell[0].fileno()), Ring(fd, doorbell[1].fileno())
    os.close(fd)
    try:
        yield writer, reader
    finally:
        writer.close()
        reader.close()


def _rang(sock: socket.socket) -> bool:
    """Whether a doorbell byte came (taking them all)."""
    try:
        return bool(sock.recv(4096))
    except BlockingIOError:
        return False


def _no_slab(name: str, offset: int, size: int) -> bytearray:
    raise AssertionError("no frame should go through a slab here")


def test_frames_come_out_in_order_across_the_end_of_the_ring(
    ring_pair: tuple[Ring, Ring], doorbell: tuple[socket.socket, socket.socket]
) -> None:
    writer, reader = ring_pair
    reader.watched()  # as the server's event loop: every put is worth a wake-up
    assert reader.take(_no_slab) is None
    assert not _rang(doorbell[1])
    sent = 0
    for round_ in range(50):  # 50 x 3 frames of ~300 bytes: the 4 KiB ring wraps many times
        frames = [bytes([round_ % 251]) * (200 + 37 * i) for i in range(3)]
        for frame in frames:
            assert writer.put([frame[:10], memoryview(frame)[10:]], len(frame))
            sent += 1
        writer.wake()
        assert _rang(doorbell[1])
        for frame in frames:
            assert reader.take(_no_slab) == frame
        assert reader.take(_no_slab) is None
    assert sent == 150


def test_a_full_ring_refuses_a_frame_until_the_reader_frees_room(
    ring_pair: tuple[Ring, Ring],
) -> None:
    writer, reader = ring_pair
    frame = b"x" * 1000
    accepted = 0
    while writer.put([frame], len(frame)):
        accepted += 1
        assert accepted < 10
    assert accepted == 4  # 4 x (4 + 1000, padded to 1008) in 4096 bytes
    assert reader.take(_no_slab) == frame
    assert writer.put([frame], len(frame))
    assert [reader.take(_no_slab) for _ in range(4)] == [frame] * 4
    assert reader.take(_no_slab) is None


def test_a_reader_that_does_not_sleep_costs_the_writer_no_wake_up(
    ring_pair: tuple[Ring, Ring], doorbell: tuple[socket.socket, socket.socket]
) -> None:
    writer, reader = ring_pair
    writer.put([b"busy"], 4)
    writer.wake()
    assert not _rang(doorbell[1])  # the reader never said it sleeps: no doorbell
    assert reader.wait()  # a frame is there: returns at once, without reading the doorbell
    assert reader.take(_no_slab) == b"busy"


def test_a_message_too_large_for_the_ring_goes_through_a_slab(
    ring_pair: tuple[Ring, Ring], tmp_path: Path
) -> None:
    writer, reader = ring_pair
    pool, slabs = SlabPool("t", str(tmp_path)), SlabReader(str(tmp_path))
    try:
        texts = np.array([b"a" * 5000, b"b"], dtype=np.object_)  # BYTES travel in the pickle
        small = np.arange(8, dtype=np.int32)
        for message in [("execute", 1, {"T": texts}), ("reply", 2, small, None)]:
            packed = pack_frame(message, pool, writer.largest_frame)
            assert (packed[0] is None) == (message[0] == "execute")
            assert put_frame(writer, packed)

        def from_slab(name: str, offset: int, size: int) -> bytearray:
            return slabs.take(name, [offset], [size])[0]

        first = decode(reader.take(from_slab) or b"", slabs)
        assert first[:2] == ("execute", 1)
        np.testing.assert_array_equal(first[2]["T"], texts)
        second = decode(reader.take(from_slab) or b"", slabs)
        np.testing.assert_array_equal(second[2], small)
        second[2][0] = 7  # arrays that came inline are writable copies
    finally:
        pool.close()
        slabs.close()


def test_a_sleeping_reader_wakes_for_a_frame_from_another_thread() -> None:
    fd = new_ring_fd(4096)
    a, b = socket.socketpair()
    writer, reader = Ring(fd, a.fileno()), Ring(fd, b.fileno())
    os.close(fd)
    got: list[bytearray] = []

    def read() -> None:
        for _ in range(100):
            frame = reader.take(_no_slab)
            if frame is not None:
                got.append(frame)
                return
            reader.wait()

    thread = threading.Thread(target=read)
    thread.start()
    writer.put([b"hello"], 5)
    writer.wake()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert got == [b"hello"]
    writer.close()
    reader.close()
    a.close()
    b.close()


WRITER = """
import struct, sys
from triton_backend_python._ring import Ring
ring = Ring(int(sys.argv[1]), int(sys.argv[2]))
for i in range(int(sys.argv[3])):
    size = (20, 100, 300, 1500, 5000)[i % 5]
    payload = struct.pack("<II", i, size) + bytes([i % 251]) * (size - 8)
    while not ring.put([payload], len(payload)):
        pass
    ring.wake()
"""


def test_frames_from_another_process_arrive_whole_and_in_order() -> None:
    """A 64 KiB ring laps hundreds of times while a process writes as fast as it can: each
    frame arrives whole and in order (the counters are never seen half-written)."""
    count = 20000
    fd = new_ring_fd(1 << 16)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reader = Ring(fd, ours.fileno())
    reader.watched()  # every frame wakes it; it never blocks longer than a poll
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(fd), str(theirs.fileno()), str(count)],
        pass_fds=(fd, theirs.fileno()),
    )
    os.close(fd)
    theirs.close()
    try:
        received = 0
        deadline = time.monotonic() + 120
        while received < count and time.monotonic() < deadline:
            frame = reader.take(_no_slab)
            if frame is None:
                if not _rang(ours):
                    select.select([ours], [], [], 0.5)
                continue
            index, size = struct.unpack_from("<II", frame)
            assert (index, size, len(frame)) == (received, size, size)
            assert frame[8:] == bytes([index % 251]) * (size - 8)
            received += 1
        assert received == count
    finally:
        assert writer.wait(timeout=60) == 0
        reader.close()
        ours.close()


@pytest.mark.parametrize(
    "array",
    [
        np.array(2.5, dtype=np.float32),  # 0-d: a scalar output with dims []
        np.arange(12, dtype=np.int64).reshape(3, 4).T,  # not C-contiguous
        np.arange(6, dtype=np.float16).reshape(2, 3)[:, ::2],  # strided
        np.zeros((0, 4), dtype=np.float32),  # empty
    ],
    ids=["0-d", "transposed", "strided", "empty"],
)
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "slab"])
def test_arrays_keep_their_shape_and_values_through_a_frame(
    array: np.ndarray[Any, Any], inline: bool, tmp_path: Path
) -> None:
    pool, slabs = SlabPool("t", str(tmp_path)), SlabReader(str(tmp_path))
    try:
        padding = np.zeros(0 if inline else 80_000, dtype=np.uint8)  # > 64 KiB: a slab
        parts, name, _, length = pack_frame(("reply", 1, array, padding), pool, 1 << 20)
        assert parts is not None and not name
        frame = bytearray(b"".join(bytes(p) for p in parts))
        assert len(frame) == length
        message = decode(frame, slabs)
        assert message[2].shape == array.shape
        assert message[2].dtype == array.dtype
        np.testing.assert_array_equal(message[2], array)
        assert message[3].shape == padding.shape
    finally:
        pool.close()
        slabs.close()


def test_a_message_without_arrays_round_trips(tmp_path: Path) -> None:
    pool, slabs = SlabPool("t", str(tmp_path)), SlabReader(str(tmp_path))
    try:
        message = ("rpc", 3, "log", (20, "hello"))
        parts, _, _, length = pack_frame(message, pool, 1 << 20)
        assert parts is not None
        frame = bytearray(b"".join(bytes(p) for p in parts))
        assert len(frame) == length
        assert decode(frame, slabs) == message
    finally:
        pool.close()
        slabs.close()
