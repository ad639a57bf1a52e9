"""Messages between the server and an isolated model process: framing, tensors, shared memory.

A message is a tuple of plain values and numpy arrays, pickled (protocol 5). Array data never
goes through the pickle stream: each array is sent out-of-band, as its dtype, shape and bytes,
so the two sides need no common numpy version. When a message's array bytes are small they
follow the pickle in the same frame, copied into the ring (``_ring.py``) that carries frames
between the two processes; when they are large they go through a shared memory slab instead
(one memory copy on the sending side), and so does a whole frame too large for the ring.

Slabs are files in a shared memory folder (``/dev/shm`` unless the backend setting
``shm-directory`` names another) owned by the side that writes them. A slab's space is reserved
with ``posix_fallocate`` when it is made: a full ``/dev/shm`` (64 MB in a default container) is
then a :class:`SharedMemoryFullError` error for the message that needed the slab, never a ``SIGBUS``
when a page of a sparse file is first touched. The first byte of a slab
says whether it is in use: the writer sets it before sending, the reader clears it once it is
done with the data, and the writer then reuses the slab. Only the writer unlinks its slabs.

Both readers leave a message's arrays in place (``SlabReader(in_place=True)``): a model reads
its inputs straight from the slab, and the server encodes a model's outputs (or writes them
into a client's shared memory region) straight from the model process's slab. A slab goes
back to its writer when the last array over it is gone: once the model returned (or the
response was sent) in the usual case, later when a model keeps an input (the writer then takes
another slab; the response cache keeps copies). A reader holds at most ``MAX_LEASES`` slabs
so; past that it copies, as before. The arrays are writable: a slab holds one message, which
nobody else reads, so a model writing into an input changes only its own copy (Triton's
``as_numpy`` hands out a private writable copy too).

Frame (after the ring's ``u32 length``): a header (``u32 pickle length, u8 where,
u32 count``, ``count`` x ``u64`` sizes; for shared memory ``u16`` name length, the name and
``count`` x ``u64`` offsets), the pickle, and for inline frames the array bytes.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import pickle
import struct
import tempfile
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from triton_backend_python._ring import Ring

__all__ = [
    "INLINE_LIMIT",
    "MAX_LEASES",
    "SHM_DIR",
    "Packed",
    "SharedMemoryFullError",
    "SlabPool",
    "SlabReader",
    "decode",
    "encode",
    "pack_frame",
    "put_frame",
    "unlink_slabs",
]

INLINE_LIMIT = 64 * 1024
"""Array bytes per message above which the arrays travel through shared memory."""

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_SLAB_HEADER = 64
_ALIGN = 64
_MIN_SLAB = 1 << 20
MAX_LEASES = 8
"""Slabs a reader holds in place at once; past that it copies what comes (a model that keeps
every input must not hold a slab, 1 MB at least, of the other side's for each)."""

_HEAD = struct.Struct("<IBI")  # pickle length, where (0 inline / 1 shared memory), count
_LEN = struct.Struct("<I")
_U16 = struct.Struct("<H")


class SharedMemoryFullError(OSError):
    """The shared memory folder has no room for a slab (the message cannot be sent)."""


class _SlabBytes(np.ndarray):  # type: ignore[type-arg]
    """The bytes of one message in a slab read in place (:meth:`SlabReader.lease`).

    A distinct ndarray type stops numpy from collapsing a view's ``base`` chain past it: every
    array built over a message's bytes, and every view of those, keeps the message's
    ``_SlabBytes`` alive, so a weak reference to it says when the last of them is gone.
    """


def _rebuild_array(dtype: str, shape: tuple[int, ...], data: Any) -> npt.NDArray[Any]:
    if type(data) is memoryview and type(data.obj) is _SlabBytes:
        # The sender's array was read-only (pickle's READONLY_BUFFER); the slab's bytes are
        # this message's own, so the model gets them writable (no copy in ``as_numpy``).
        data = data.obj
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)


def _rebuild_objects(shape: tuple[int, ...], items: list[Any]) -> npt.NDArray[Any]:
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out.reshape(shape)


class _Pickler(pickle.Pickler):
    """Sends numpy arrays as (dtype string, shape, out-of-band bytes)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray:
            return NotImplemented
        dtype = obj.dtype
        kind = dtype.kind
        if kind == "O":
            return _rebuild_objects, (obj.shape, obj.reshape(-1).tolist())
        if kind == "V":  # e.g. bfloat16: let numpy pickle it
            return NotImplemented
        if not obj.flags.c_contiguous:
            obj = obj.copy()  # C order, same shape (ascontiguousarray would make a 0-d 1-d)
        return _rebuild_array, (dtype.str, obj.shape, pickle.PickleBuffer(obj))


def _align(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


class _Slab:
    __slots__ = ("mm", "name", "size")

    def __init__(self, name: str, size: int, mm: mmap.mmap) -> None:
        self.name = name
        self.size = size
        self.mm = mm


class SlabPool:
    """The shared memory slabs one side writes (thread-safe)."""

    def __init__(self, prefix: str, directory: str = SHM_DIR) -> None:
        self.prefix = prefix
        self.directory = directory
        self._slabs: list[_Slab] = []
        self._lock = threading.Lock()
        self._closed = False

    def put(self, views: list[memoryview]) -> tuple[str, list[int]]:
        """Copy ``views`` into a free slab; returns its name and each view's offset."""
        need = _SLAB_HEADER + sum(_align(v.nbytes) for v in views)
        with self._lock:
            if self._closed:
                raise OSError("the shared memory pool is closed")
            slab = next((s for s in self._slabs if s.size >= need and s.mm[0] == 0), None)
            if slab is None:
                slab = self._create(max(_MIN_SLAB, 1 << (need - 1).bit_length()))
            slab.mm[0] = 1
        offsets: list[int] = []
        offset = _SLAB_HEADER
        with memoryview(slab.mm) as target:
            for view in views:
                target[offset : offset + view.nbytes] = view
                offsets.append(offset)
                offset += _align(view.nbytes)
        return slab.name, offsets

    def _create(self, size: int) -> _Slab:
        name = f"{self.prefix}-{len(self._slabs)}"
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            try:
                # Reserve every page now: writing into a sparse file on a full tmpfs is SIGBUS.
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                os.unlink(path)
                raise SharedMemoryFullError(
                    exc.errno,
                    f"cannot reserve {size} bytes of shared memory in '{self.directory}'"
                    f" ({os.strerror(exc.errno or 0)}); the tensors of this request do not fit:"
                    " give the server more shared memory (docker run --shm-size, or the"
                    " backend setting shm-directory)",
                ) from exc
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        slab = _Slab(name, size, mm)
        self._slabs.append(slab)
        return slab

    def close(self) -> None:
        """Unmap and unlink every slab."""
        with self._lock:
            self._closed = True
            slabs, self._slabs = self._slabs, []
        for slab in slabs:
            slab.mm.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, slab.name))


class SlabReader:
    """The other side's slabs, mapped on first use (thread-safe).

    ``in_place``: :func:`decode` reads a message's arrays from the slab instead of copying
    them out (:meth:`lease`).
    """

    def __init__(self, directory: str = SHM_DIR, *, in_place: bool = False) -> None:
        self.directory = directory
        self.in_place = in_place
        self._maps: dict[str, tuple[mmap.mmap, npt.NDArray[np.uint8]]] = {}
        self._lock = threading.Lock()
        self._leases: dict[int, tuple[weakref.ref[_SlabBytes], mmap.mmap]] = {}
        """Slabs read in place whose arrays are alive, by ``id`` of their weak reference (which
        must live for its callback to run; an array is not hashable)."""

    def _map(self, name: str) -> tuple[mmap.mmap, npt.NDArray[np.uint8]]:
        with self._lock:
            mapped = self._maps.get(name)
            if mapped is None:
                if "/" in name or name.startswith("."):
                    raise OSError(f"bad shared memory slab name '{name}'")
                fd = os.open(os.path.join(self.directory, name), os.O_RDWR)
                try:
                    mm = mmap.mmap(fd, os.fstat(fd).st_size)
                finally:
                    os.close(fd)
                # over a memoryview, which holds the mapping open while an array uses it
                mapped = self._maps[name] = (mm, np.frombuffer(memoryview(mm), dtype=np.uint8))
        return mapped

    def take(self, name: str, offsets: list[int], sizes: list[int]) -> list[bytearray]:
        """Copy the data out of slab ``name`` and hand the slab back to its writer."""
        mm = self._map(name)[0]
        with memoryview(mm) as source:
            # bytearray(view) copies without zero-filling first
            out = [bytearray(source[o : o + s]) for o, s in zip(offsets, sizes, strict=True)]
        mm[0] = 0  # after the copies: the writer may reuse the slab
        return out

    def lease(self, name: str, offsets: list[int], sizes: list[int]) -> list[_SlabBytes]:
        """Views of the data in slab ``name``; the slab goes back to its writer when the last
        array over any of them is gone."""
        mm, whole = self._map(name)
        message = whole.view(_SlabBytes)
        ref = weakref.ref(message, self._return)
        self._leases[id(ref)] = (ref, mm)
        return [message[o : o + s] for o, s in zip(offsets, sizes, strict=True)]

    def _return(self, ref: weakref.ref[_SlabBytes]) -> None:
        """A message's arrays are all gone (any thread): its slab is the writer's again."""
        lease = self._leases.pop(id(ref), None)
        if lease is not None and not lease[1].closed:
            lease[1][0] = 0

    def leased(self) -> int:
        """How many slabs read in place still have arrays alive."""
        return len(self._leases)

    def close(self) -> None:
        with self._lock:
            maps, self._maps = self._maps, {}
        mms = [mm for mm, _ in maps.values()]
        maps.clear()  # the arrays over the mappings, and with them their buffer exports
        for mm in mms:
            # arrays a model still holds keep their mapping until they go
            with contextlib.suppress(BufferError):
                mm.close()


def unlink_slabs(prefix: str, directory: str = SHM_DIR) -> None:
    """Remove slabs left by a process that died (their names start with ``prefix-``)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix + "-"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _encode(message: object, pool: SlabPool) -> tuple[list[bytes | memoryview], int]:
    """The frame of ``message`` as parts to write in order (no length prefix), and its length."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(message)
    body = stream.getbuffer()
    count = len(buffers)
    if not count:  # no arrays: the common "executed" of a failed batch, rpc, notify, ...
        head = _HEAD.pack(body.nbytes, 0, 0)
        return [head, body], len(head) + body.nbytes
    views = [b.raw() for b in buffers]
    sizes = [v.nbytes for v in views]
    total = sum(sizes)
    if total <= INLINE_LIMIT:
        head = _HEAD.pack(body.nbytes, 0, count) + struct.pack(f"<{count}Q", *sizes)
        return [head, body, *views], len(head) + body.nbytes + total
    name, offsets = pool.put(views)
    encoded = name.encode()
    head = b"".join(
        (
            _HEAD.pack(body.nbytes, 1, count),
            struct.pack(f"<{count}Q", *sizes),
            _U16.pack(len(encoded)),
            encoded,
            struct.pack(f"<{count}Q", *offsets),
        )
    )
    return [head, body], len(head) + body.nbytes


def encode(message: object, pool: SlabPool) -> list[bytes | memoryview]:
    """The frame of ``message``, as parts to write in order (its ``u32`` length first)."""
    parts, length = _encode(message, pool)
    return [_LEN.pack(length), *parts]


Packed = tuple[list[bytes | memoryview] | None, str, int, int]
"""A frame ready for a ring: (parts, "", 0, length), or (None, slab name, offset, length)
for a frame too large for the ring, already copied into a slab."""


def pack_frame(message: object, pool: SlabPool, largest: int) -> Packed:
    """``message`` as a frame for a ring whose frames are at most ``largest`` bytes.

    :raises SharedMemoryFullError: when it needs a slab and there is no room for one.
    """
    parts, length = _encode(message, pool)
    if length <= largest:
        return parts, "", 0, length
    name, offsets = pool.put([memoryview(b"".join(parts))])
    return None, name, offsets[0], length


def put_frame(ring: Ring, frame: Packed) -> bool:
    """Copy a packed frame into ``ring``; False when it has no room now."""
    parts, name, offset, length = frame
    if parts is None:
        return ring.put_indirect(name, offset, length)
    return ring.put(parts, length)


def decode(frame: bytes | bytearray, reader: SlabReader) -> Any:
    """The message in ``frame`` (the bytes after the length prefix).

    Inline arrays are views of ``frame`` (writable when it is a ``bytearray``); arrays in a
    slab are copies, or views of the slab for a reader ``in_place``.
    """
    view = memoryview(frame)
    body_len, where, count = _HEAD.unpack_from(view, 0)
    offset = _HEAD.size
    if not count:
        return pickle.loads(view[offset : offset + body_len])
    sizes = struct.unpack_from(f"<{count}Q", view, offset)
    offset += 8 * count
    buffers: list[Any]
    if where == 1:
        (name_len,) = _U16.unpack_from(view, offset)
        offset += 2
        name = bytes(view[offset : offset + name_len]).decode()
        offset += name_len
        offsets = list(struct.unpack_from(f"<{count}Q", view, offset))
        offset += 8 * count
        body = view[offset : offset + body_len]
        if reader.in_place and reader.leased() < MAX_LEASES:
            buffers = list(reader.lease(name, offsets, list(sizes)))
        else:
            buffers = list(reader.take(name, offsets, list(sizes)))
    else:
        body = view[offset : offset + body_len]
        offset += body_len
        buffers = []
        for size in sizes:
            buffers.append(view[offset : offset + size])
            offset += size
    return pickle.loads(body, buffers=buffers)
