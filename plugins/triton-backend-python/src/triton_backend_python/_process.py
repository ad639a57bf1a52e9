"""The isolated execution mode (the default), server side: one model process per instance.

:class:`ModelProcess` starts ``python -m triton_backend_python._stub`` with two shared memory
rings (``_ring.py``: messages each way) and an end of two socket pairs, one per direction: the
doorbell of the ring to the process, and the doorbell of the ring from it, which is also the
process's lifeline (its end of file says the process died), watched by the loop; then
speaks the messages ``_stub.py`` describes, on the server's event loop: commands (initialize,
execute, finalize) one at a time, and, at any moment, what the model asks of the server
(responses through senders and batches' answers here; BLS calls, model control, logging and
metrics in ``_process_calls.py``).

The hot path, per request: :meth:`ModelProcess.submit` (called by the kernel's worker on the
loop, no task) copies the batch into the ring and rings the doorbell if the process sleeps; the
doorbell callback reads the ``executed`` answer and responds (:meth:`ModelProcess._executed`)
in the same turn. Two wake-ups cross the processes, none between threads; when one client
sends one request at a time to a quick model, the loop looks at the ring for the answer for a
moment instead of sleeping (``_quick.py``), and the answer then costs no wake-up.

A doorbell per direction, not one socket for both: reading a byte from a socket wakes whoever
sleeps in a read on the other end (the kernel announces room to write), so with one socket every
doorbell the server read woke the model process, asleep on the same socket, for nothing (two
sleeps per request where one is needed, measured).

When the process dies, the batch it was running and every request still waiting on it get an
error at once, with the reason (exit code or signal), and ``on_death`` is called: the instance
(``_process_instance.py``) restarts it.

Flow control: responses arrive on the loop, which the kernel never holds, so a streaming
frontend's limit of unread responses (``InferenceRequest.limit_unread_responses``) is kept by
the process: a ``windows`` message before the batch gives it each limited request's window, the
model's sending thread waits there once that many responses are not taken, and the server
gives ``credit`` as the frontend takes them (in steps of a quarter window), or lets it go at
once when the request is cancelled or the model unloads. Requests without a limit cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from kernel import (
    InferenceRequest,
    InferenceResponse,
    KernelError,
    ServerHandle,
    Status,
)
from triton_backend_python._convert import STATUS_BY_CODE
from triton_backend_python._process_calls import ModelCalls
from triton_backend_python._quick import LINGER, SMALL_BATCH, SMALL_BATCH_LINGER, QuickAnswers
from triton_backend_python._ring import Ring, RingError, new_ring_fd
from triton_backend_python._wire import (
    Packed,
    SharedMemoryFullError,
    SlabPool,
    SlabReader,
    decode,
    pack_frame,
    put_frame,
    unlink_slabs,
)

if TYPE_CHECKING:
    from triton_backend_python._backend import PythonModel

__all__ = ["ModelProcess", "process_auto_complete"]

log = logging.getLogger("triton_backend_python")

START_TIMEOUT_SECONDS = 120.0
"""How long a model process may take to start (its imports) before the load fails."""
EXIT_TIMEOUT_SECONDS = 10.0
"""How long a finalized model process may take to exit before it is killed."""

# "python -c" puts the working directory first on sys.path: drop it, so a model process sees
# its environment's packages (and this plugin's), not whatever the server's folder holds.
_BOOTSTRAP = (
    "import sys; del sys.path[0]; from triton_backend_python._stub import main; sys.exit(main())"
)


def _error(error: tuple[int, str] | None) -> KernelError | None:
    return None if error is None else KernelError(STATUS_BY_CODE[error[0]], error[1])


Done = Callable[[BaseException | None], None]
"""Called once a batch is done, with its error or None (``ModelInstance.submit``'s ``done``)."""


class _Batch(NamedTuple):
    """A batch sent to the process, until its ``executed`` message."""

    done: Done
    requests: Sequence[InferenceRequest]
    keys: list[int]
    sent: float
    """``time.perf_counter()`` when it was sent (the round trip feeds :class:`QuickAnswers`)."""


_BUSY: set[ModelProcess] = set()
"""The model processes of this server that have batches out (the loop may wait for one only
when it is the only one)."""


def _kill_spawned(spawned: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    if not spawned.cancelled() and spawned.exception() is None:
        process = spawned.result()
        process.kill()
        threading.Thread(target=process.wait, daemon=True).start()  # reap it


def _exit_reason(code: int | None) -> str:
    """How a process ended, in words (``exit code 3``, ``killed by signal 11 (SIGSEGV)``)."""
    if code is None:
        return "it closed its connection and did not exit"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "unknown"
    return f"killed by signal {-code} ({name})"


class ModelProcess:
    """A model process and its connection, seen from the server's event loop."""

    def __init__(
        self,
        *,
        label: str,
        model: PythonModel,
        logger: logging.Logger,
        on_death: Callable[[str], None] | None = None,
    ) -> None:
        self.label = label
        self.model = model
        self.server: ServerHandle = model.context.server
        self.decoupled = model.context.decoupled
        self._small_batch_linger = (
            model.context.config.dynamic_batching is not None and model.backend.answer_wait > 0
        )
        """Batches come from the dynamic batcher, and waiting is allowed (``answer-wait-us``
        not 0): the process lingers after small batches (see ``SMALL_BATCH_LINGER``)."""
        self.logger = logger
        self.on_death = on_death
        """Called (on the loop) with the reason when the process dies while serving."""
        self._shm_dir = model.backend.shm_directory
        prefix = f"tkpy-{os.getpid()}-{secrets.token_hex(4)}"
        self._pool = SlabPool(prefix + "p", self._shm_dir)
        self._child_prefix = prefix + "c"
        self._slabs = SlabReader(self._shm_dir, in_place=True)  # outputs read in place
        self._process: subprocess.Popen[bytes] | None = None
        self._watching = False
        self._socket: socket.socket | None = None
        """The process's lifeline (its end of file says the process died) and the doorbell of
        the ring from it (a byte says "look at the ring"), watched by the loop."""
        self._bell: socket.socket | None = None
        """The doorbell of the ring to the process (the server only writes to it)."""
        self._quick = QuickAnswers(model.backend.answer_wait)
        self.quick_answers = 0
        """Answers the loop found while it waited for them (``_quick.py``; tests, debugging)."""
        self._to: Ring | None = None
        self._from: Ring | None = None
        self._ring_fds: tuple[int, ...] = ()
        self._outbox: list[Packed] = []
        self._flushing = False
        self._hello: asyncio.Future[tuple[Any, ...]] | None = None
        self._death: asyncio.Task[None] | None = None
        self._command: asyncio.Future[tuple[Any, ...]] | None = None
        self._batches_waiting: dict[int, _Batch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rearming = False
        self._keys = itertools.count(1)
        self._batches = itertools.count(1)
        self.inflight: dict[int, InferenceRequest] = {}
        self._credits: dict[int, list[int]] = {}
        """Flow controlled requests: [responses taken and not yet credited, credit step]."""
        self._calls = ModelCalls(self)
        self.dead: str | None = None
        self._closing = False
        self.has_ready_hook = False
        """The model defines ``is_ready()`` (the process said so after ``init``)."""
        self._ready_check: asyncio.Future[bool] | None = None

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the process and wait for its greeting.

        :raises KernelError: ``UNAVAILABLE`` when it does not start (the reason says why).
        """
        settings = self.model.settings
        loop = self._loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        bell, bell_child = socket.socketpair()
        bell.setblocking(False)
        self._bell = bell
        try:
            self._open_rings(bell.fileno(), parent.fileno())
        except OSError as exc:
            self._close_rings()
            self._close_bell()
            parent.close()
            child.close()
            bell_child.close()
            raise KernelError(
                Status.UNAVAILABLE, f"cannot make the shared memory rings of '{self.label}': {exc}"
            ) from exc
        assert self._to is not None and self._from is not None
        ring_in, ring_out = self._ring_fds
        command = [
            settings.python,
            "-c",
            _BOOTSTRAP,
            "--fd",
            str(child.fileno()),
            "--bell-fd",
            str(bell_child.fileno()),
            "--shm-prefix",
            self._child_prefix,
            "--shm-dir",
            self._shm_dir,
            "--name",
            self.label,
            "--rings",
            f"{ring_in},{ring_out}",
        ]
        inherited = (child.fileno(), bell_child.fileno(), ring_in, ring_out)
        env = self.model.child_environment()

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command,
                pass_fds=inherited,
                env=env,
                stdin=subprocess.DEVNULL,
                # Same session as the server, as Triton's stub: a session of its own is a
                # scheduler autogroup of its own, and on a loaded machine every wake-up of the
                # model process then waited for that group's turn (measured: 3-4x slower at
                # c=1). A terminal's Ctrl-C reaches it too, and it ignores it (see _stub.py).
            )

        spawned = asyncio.get_running_loop().run_in_executor(None, spawn)
        try:
            self._process = await asyncio.shield(spawned)
        except OSError as exc:
            self._close_rings()
            self._close_bell()
            parent.close()
            raise KernelError(
                Status.UNAVAILABLE, f"cannot start a process for '{self.label}': {exc}"
            ) from exc
        except BaseException:
            # Cancelled while the process was being made: stop it once it exists.
            self._close_rings()
            self._close_bell()
            parent.close()
            spawned.add_done_callback(_kill_spawned)
            raise
        finally:
            child.close()
            bell_child.close()
            for fd in self._ring_fds:
                os.close(fd)
            self._ring_fds = ()
        parent.setblocking(False)
        self._socket = parent
        loop.add_reader(parent.fileno(), self._on_doorbell)
        self._watching = True
        hello = self._hello = loop.create_future()
        try:
            with anyio.fail_after(START_TIMEOUT_SECONDS):
                greeting = await hello
        except (TimeoutError, ConnectionError) as exc:
            code = await self._exit_code(EXIT_TIMEOUT_SECONDS)
            await self._shutdown()
            raise KernelError(
                Status.UNAVAILABLE,
                f"the process of '{self.label}' ({settings.python}) did not start"
                f" (exit code {code})",
            ) from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
            raise
        self.logger.debug(
            "model process of '%s' started: pid %s, Python %s", self.label, *greeting[1:]
        )

    def _open_rings(self, bell: int, lifeline: int) -> None:
        """Two rings (to and from the process) in memfds the process inherits; ``bell`` wakes
        the process, a byte on ``lifeline`` wakes the loop."""
        self._ring_fds = (new_ring_fd(),)
        self._ring_fds += (new_ring_fd(),)
        ring_in, ring_out = self._ring_fds
        self._to = Ring(ring_in, bell)
        self._from = Ring(ring_out, lifeline)
        self._from.watched()  # the loop watches the socket

    def _close_rings(self) -> None:
        """Stop watching and unmap the rings (idempotent)."""
        _BUSY.discard(self)  # nothing more comes from it: no waiting for it
        for fd in self._ring_fds:
            os.close(fd)
        self._ring_fds = ()
        self._outbox.clear()
        for ring in (self._to, self._from):
            if ring is not None:
                ring.close()
        self._to = self._from = None

    def _stop_watching(self) -> bool:
        """Stop watching the socket; False if it was not watched any more."""
        if self._socket is None or not self._watching:
            return False
        self._watching = False
        with contextlib.suppress(RuntimeError):  # a closed loop watches nothing
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
        return True

    def _close_socket(self) -> None:
        """Close the rings, then the socket (idempotent).

        In that order: a ring rings its doorbell by the socket's descriptor number, which a
        closed socket gives back for the next file the server opens.
        """
        self._stop_watching()
        self._close_rings()
        self._close_bell()
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _close_bell(self) -> None:
        bell, self._bell = self._bell, None
        if bell is not None:
            bell.close()

    def _on_doorbell(self) -> None:
        """The socket is readable: doorbells (look at the ring), or its end (the process died)."""
        sock = self._socket
        if sock is None:
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._on_wake()
            self._stay_awake()
        elif self._stop_watching():
            self._on_lost()

    def _stay_awake(self) -> None:
        """While batches are out, look at the ring again in the loop's next turn instead of
        asking for a doorbell: with requests in flight the loop is busy anyway, and an answer
        that comes before then costs the process no system call and the loop no wake-up."""
        ring = self._from
        if ring is None or self._rearming or not self._batches_waiting:
            return
        ring.awake()
        self._rearming = True
        assert self._loop is not None
        self._loop.call_soon(self._rearm)

    def _rearm(self) -> None:
        self._rearming = False
        ring = self._from
        if ring is not None and ring.rearm():
            self._on_wake()
            self._stay_awake()

    def _on_wake(self) -> None:
        """Handle every frame the process put in its ring."""
        ring = self._from
        if ring is None:
            return
        while self._from is ring:
            try:
                frame = ring.take(self._take_slab)
            except RingError:
                self.logger.exception("bad ring from the process of '%s'", self.label)
                self._abandon()
                return
            if frame is None:
                return
            self._on_frame(frame)

    def _take_slab(self, name: str, offset: int, size: int) -> bytearray:
        return self._slabs.take(name, [offset], [size])[0]

    def _on_frame(self, frame: bytes | bytearray) -> None:
        try:
            message = decode(frame, self._slabs)
            if message[0] == "hello":
                if self._hello is not None and not self._hello.done():
                    self._hello.set_result(message)
                return
            self._dispatch(message)
        except Exception:
            self.logger.exception("bad message from the process of '%s'", self.label)
            self._abandon()

    def _abandon(self) -> None:
        """Kill a process that broke the protocol: its death fails what it held (restart)."""
        if self._process is not None:
            self._process.kill()
        self._close_rings()  # nothing more is read from it
        if self._stop_watching():
            self._on_lost()

    def _on_lost(self) -> None:
        """The lifeline ended (or the server cut it)."""
        self._on_wake()  # what the process said before it went comes first
        if self._hello is not None and not self._hello.done():
            if self._closing:
                self._hello.cancel()
            else:
                error = ConnectionError("the model process closed its connection")
                self._hello.set_exception(error)
            return  # it never started: start() says so
        if self._closing:  # a finalized process exits: only pending commands need an answer
            self._fail_commands(KernelError(Status.UNAVAILABLE, "process exited"))
        elif self._death is None:
            self._death = asyncio.get_running_loop().create_task(self._died())

    async def _exit_code(self, timeout: float) -> int | None:
        process = self._process
        if process is None:
            return None
        try:
            return await anyio.to_thread.run_sync(lambda: process.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    async def finalize(self) -> str | None:
        """Ask the model to finalize, then stop the process; returns finalize's error."""
        error: str | None = None
        self._closing = True
        if self.dead is None and self._credits:
            self._end_held_streams()
        if self.dead is None:
            try:
                with anyio.fail_after(EXIT_TIMEOUT_SECONDS * 6):
                    (error,) = await self.command(("finalize",))
            except (KernelError, TimeoutError) as exc:
                error = str(exc)
        await self._shutdown()
        return error

    def _end_held_streams(self) -> None:
        """Unloading (the drain is over): streams still open are those of clients that do
        not read. Cancel them (the model sees ``is_cancelled()``) and end them with an
        error, and let every held sender go, so the model can finalize; what it still
        sends is dropped, not buffered."""
        error = KernelError(Status.UNAVAILABLE, f"the model instance '{self.label}' is unloading")
        for key in list(self._credits):
            request = self.inflight.get(key)
            if request is not None:
                request.cancel()
                request.fail(error)
        self._credits.clear()
        self.send(("credit", 0, -1))

    async def _shutdown(self) -> None:
        self._closing = True
        if self._stop_watching():
            self._on_lost()  # commands still waiting get their answer
        self._close_socket()  # its end of file: a process still there exits
        if await self._exit_code(EXIT_TIMEOUT_SECONDS) is None and self._process is not None:
            self._process.kill()
            await self._exit_code(EXIT_TIMEOUT_SECONDS)
        if self._death is not None:
            self._death.cancel()
        self._calls.close()
        self._close_rings()
        self._pool.close()
        self._slabs.close()
        unlink_slabs(self._child_prefix, self._shm_dir)

    @property
    def closing(self) -> bool:
        """Whether the process is being finalized (its calls' answers no longer matter)."""
        return self._closing

    @property
    def pid(self) -> int | None:
        """The process id (None before ``start``)."""
        return None if self._process is None else self._process.pid

    async def _died(self) -> None:
        code = await self._exit_code(EXIT_TIMEOUT_SECONDS)
        reason = f"Stub process '{self.label}' is not healthy ({_exit_reason(code)})."
        self.dead = reason
        self.logger.error("%s", reason)
        self._fail_commands(KernelError(Status.UNAVAILABLE, reason))
        error = KernelError(
            Status.INTERNAL,
            f"Failed to process the request(s) for model instance '{self.label}', message:"
            f" {reason}",
        )
        for request in self.inflight.values():
            request.fail(error)
        self.inflight.clear()
        self._credits.clear()
        self._calls.close()
        self._close_socket()
        self._close_rings()
        self._pool.close()
        self._slabs.close()
        unlink_slabs(self._child_prefix, self._shm_dir)
        if self.on_death is not None:
            self.on_death(reason)

    # -- messages -------------------------------------------------------------------------------

    def send(self, message: tuple[Any, ...]) -> None:
        """Write a message (on the loop; never blocks).

        :raises SharedMemoryFullError: when its tensors need a slab and there is no room for one.
        """
        ring = self._to
        if self.dead is not None or ring is None:
            return
        frame = pack_frame(message, self._pool, ring.largest_frame)
        if not self._outbox and put_frame(ring, frame):
            # At once, not at the end of the loop's turn: one loop iteration less per request,
            # and the process starts while the loop finishes its turn. The doorbell costs a
            # system call only when the process sleeps (``Ring.wake``).
            ring.wake()
            return
        self._outbox.append(frame)
        if not self._flushing:
            self._flushing = True
            assert self._loop is not None
            self._loop.call_later(0.001, self._flush)

    def _flush(self) -> None:
        """Copy the messages that found the ring full into it, once the process made room.

        A ring without room (a process that stopped reading) is tried again a moment later.
        """
        self._flushing = False
        ring = self._to
        if ring is None:
            return
        outbox = self._outbox
        sent = 0
        for frame in outbox:
            if not put_frame(ring, frame):
                break
            sent += 1
        if sent:
            del outbox[:sent]
            ring.wake()
        if outbox and self._loop is not None:
            self._flushing = True
            self._loop.call_later(0.001, self._flush)

    async def command(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        """Send a command and wait for its ``done`` (commands run one at a time).

        :raises KernelError: ``UNAVAILABLE`` when the process is dead or dies meanwhile.
        """
        if self.dead is not None:
            raise KernelError(Status.UNAVAILABLE, self.dead)
        future = self._command = asyncio.get_running_loop().create_future()
        self.send(message)
        try:
            result: tuple[Any, ...] = await future
        finally:
            self._command = None
        return result

    def _fail_commands(self, error: KernelError) -> None:
        batches = list(self._batches_waiting.values())
        self._batches_waiting.clear()
        _BUSY.discard(self)
        for future in (self._command, self._ready_check):
            if future is not None and not future.done():
                future.set_exception(error)
        for batch in batches:
            batch.done(error)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "executed":
            batch = self._batches_waiting.pop(message[1], None)
            if batch is not None:
                if not self._batches_waiting:
                    _BUSY.discard(self)
                self._quick.answered(time.perf_counter() - batch.sent)
                self._executed(batch, *message[2:])
        elif kind == "done":
            if self._command is not None and not self._command.done():
                self._command.set_result(message[1:])
        elif kind == "send":
            self._on_send(*message[1:])
        elif kind == "fail":
            self._on_fail(*message[1:])
        elif kind == "reschedule":
            for key in message[1]:
                request = self.inflight.pop(key, None)
                self._credits.pop(key, None)
                if request is not None:
                    request.reschedule()  # the kernel requeues it once execute returns
        elif kind == "hooks":
            self.has_ready_hook = bool(message[1])
        elif kind == "ready":
            self._on_ready(message[1], message[2])
        else:
            self._calls.dispatch(message)

    async def model_ready(self) -> bool:
        """The model's ``is_ready()`` answer (True without the hook). Concurrent checks share
        one question to the process, as Triton's stub does.

        :raises KernelError: ``UNAVAILABLE`` when the process is dead or dies meanwhile.
        """
        if self.dead is not None:
            raise KernelError(Status.UNAVAILABLE, self.dead)
        if not self.has_ready_hook:
            return True
        check = self._ready_check
        if check is None or check.done():
            check = self._ready_check = asyncio.get_running_loop().create_future()
            self.send(("is_ready",))
        return await asyncio.shield(check)

    def _on_ready(self, answer: bool, error: str | None) -> None:
        if error is not None:
            self.logger.error("readiness check of '%s': %s: not ready", self.label, error)
        check, self._ready_check = self._ready_check, None
        if check is not None and not check.done():
            check.set_result(bool(answer))

    # -- requests -----------------------------------------------------------------------------

    async def execute(self, requests: Sequence[InferenceRequest]) -> None:
        """Run one batch in the process (see :meth:`submit`) and wait until it is done.

        :raises KernelError: the batch's error (the kernel answers the unanswered requests).
        """
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.submit(requests, done)
        await future

    def submit(self, requests: Sequence[InferenceRequest], done: Done) -> None:
        """Send one batch to the process (on the loop; never blocks); ``done`` is called once
        the process answered it, right after the answers, with the batch's error if it failed.

        Batches may overlap: each goes to the process at once, which runs them one at a time in
        the order they came, so the next is already there when one finishes. The answers are
        given from the callback that read them (:meth:`_executed`), in the same loop turn.

        :raises KernelError: when the process is dead, or the tensors find no shared memory.
        """
        if self.dead is not None:
            raise KernelError(Status.UNAVAILABLE, self.dead)
        inflight = self.inflight
        keys: list[int] = []
        items: list[tuple[Any, ...]] = []
        windows: list[tuple[int, int]] = []
        for request in requests:
            key = next(self._keys)
            keys.append(key)
            inflight[key] = request
            if self.decoupled:
                request.response_sender()  # open until the model sends the final flag
                window = request.watch_reading(
                    functools.partial(self._taken, key), functools.partial(self._released, key)
                )
                if window:
                    windows.append((key, window))
                    self._credits[key] = [0, max(1, window // 4)]
            items.append(
                (
                    key,
                    request.inputs,
                    request.requested_output_names,
                    request.id,
                    request.correlation_id,
                    int(request.flags),
                    request.timeout_us,
                    request.parameters,
                )
            )
        batch_id = next(self._batches)
        waiting = self._batches_waiting
        alone = (
            not waiting
            and (not _BUSY or (len(_BUSY) == 1 and self in _BUSY))
            and len(inflight) == len(keys)
        )
        budget = self._quick.budget(alone)
        # One client in sequence to a quick model, or a few clients behind the dynamic batcher:
        # the process looks for the next request for a moment after answering instead of
        # sleeping (``_quick.py``, ``LINGER``, ``SMALL_BATCH_LINGER``).
        if budget:
            linger = LINGER
        elif self._small_batch_linger and len(keys) <= SMALL_BATCH:
            linger = SMALL_BATCH_LINGER
        else:
            linger = 0.0
        try:
            if windows:  # before the batch: the process holds their senders from the start
                self.send(("windows", windows))
            self.send(("execute", batch_id, items, linger))
        except SharedMemoryFullError as exc:
            for key in keys:
                inflight.pop(key, None)
                self._credits.pop(key, None)
            raise KernelError(
                Status.UNAVAILABLE,
                f"Failed to process the request(s) for model instance '{self.label}',"
                f" message: {exc.strerror}",
            ) from exc
        waiting[batch_id] = _Batch(done, requests, keys, time.perf_counter())
        _BUSY.add(self)
        if budget and not self._rearming:
            self._wait_for_answer(budget)

    def _wait_for_answer(self, budget: float) -> None:
        """Look at the ring for up to ``budget`` seconds for the answer (see ``_quick.py``);
        while it looks, the process rings no doorbell. An answer found is handled at once."""
        ring = self._from
        if ring is None:
            return
        ring.awake()
        clock = time.perf_counter
        deadline = clock() + budget
        found = ring.ready()
        while not found and clock() < deadline:
            os.sched_yield()  # whatever else this CPU has (the model process?) runs first
            found = ring.ready()
        self._quick.waited(found)
        if ring.rearm() or found:
            if found:
                self.quick_answers += 1
            self._on_wake()

    def _executed(
        self,
        batch: _Batch,
        results: list[Any] | None,
        error: str | None,
        unanswered: list[int],
    ) -> None:
        """The process answered a batch: respond, then say the batch is done."""
        done, requests, keys, _ = batch
        inflight = self.inflight
        if error is not None:
            failure = KernelError(Status.INTERNAL, error)
            for key in keys:
                waiting = inflight.pop(key, None)
                self._credits.pop(key, None)
                if waiting is not None:
                    waiting.fail(failure)
            done(failure)
            return
        if not self.decoupled:
            for key in keys:
                inflight.pop(key, None)
        for request, result in zip(requests, results or (), strict=False):
            if result is not None and not request.answered:
                outputs, wire_error, parameters, _ = result
                request.respond(outputs, error=_error(wire_error), parameters=parameters)
        for key in unanswered:
            self._on_fail(key, None)
        done(None)

    def _on_send(
        self,
        key: int,
        outputs: dict[str, Any] | None,
        error: tuple[int, str] | None,
        parameters: dict[str, Any] | None,
        final: bool,
    ) -> None:
        request = self.inflight.get(key)
        if request is None:
            return
        if final:
            del self.inflight[key]
            if self._credits:
                self._credits.pop(key, None)
        try:
            if not self.decoupled:
                request.respond(outputs, error=_error(error), parameters=parameters)
            elif outputs is None and error is None:
                request.response_sender().send(None, final=final)
            else:
                response = InferenceResponse(
                    outputs=outputs or {}, parameters=parameters or {}, error=_error(error)
                )
                request.response_sender().send(response, final=final)
        except KernelError:
            self.logger.debug("a response to an answered request of '%s' was dropped", self.label)

    def _taken(self, key: int) -> None:
        """The frontend took a response of a flow controlled request: credit the process,
        a step at a time (the process holds at most a window plus a step unread)."""
        credit = self._credits.get(key)
        if credit is None:
            return
        credit[0] += 1
        if credit[0] >= credit[1]:
            self.send(("credit", key, credit[0]))
            credit[0] = 0

    def _released(self, key: int) -> None:
        """The request was cancelled: its sender must not wait any more."""
        if self._credits.pop(key, None) is not None:
            self.send(("credit", key, -1))

    def _on_fail(self, key: int, text: str | None) -> None:
        if self._credits:
            self._credits.pop(key, None)
        request = self.inflight.pop(key, None)
        if request is not None:
            request.fail(
                KernelError(
                    Status.INTERNAL,
                    text
                    or f"model '{self.model.context.name}' returned from execute without"
                    " answering the request",
                )
            )


async def process_auto_complete(model: PythonModel, label: str, config: str) -> str | None:
    """Run ``auto_complete_config`` in a throwaway model process (the model's environment).

    :raises KernelError: when the process does not start or the method fails.
    """
    process = ModelProcess(label=label, model=model, logger=model.context.logger)
    await process.start()
    try:
        completed, error = await process.command(
            ("autocomplete", str(model.model_file), label, config)
        )
    finally:
        await process.finalize()
    if error is not None:
        raise KernelError(Status.INVALID_ARG, error)
    return completed  # type: ignore[no-any-return]
