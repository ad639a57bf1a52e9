"""The isolated model process: one model instance, driven by the server through shared memory.

Started by the server (see ``_process.py``) with ``--fd N --bell-fd B --shm-prefix P --shm-dir
D --name INSTANCE --rings IN,OUT``: messages come and go through two shared memory rings
(``_ring.py``); the socket ``B`` carries the doorbells of the ring in (its end of file tells that
the server is gone), the socket ``N`` those of the ring out (and its end tells the server this
process is gone). It may run another environment's interpreter: this module
and what it imports never import the kernel, only numpy and ``triton_python_backend_utils``.

To the model the process looks like Triton's stub (``triton_python_backend_stub``): ``sys.argv``
is ``['']`` (so ``unittest.main()`` or ``argparse`` in a model never sees the server's command
line), the working directory and environment are the server's, ``model.py`` is imported as
``<version>.model`` with the version folder and the model folder on ``sys.path``, and SIGINT and
SIGTERM are ignored: the server, not a terminal's Ctrl-C, decides when a model finalizes.

Threads: the main thread runs the model (initialize, each execute, finalize) one command at a
time; a reader thread receives everything else (answers to the model's calls, BLS responses)
so a model blocked in ``exec`` still gets its answer; an event loop thread runs ``async def``
hooks. Any thread may send. When the server goes away the process exits.

Messages (tuples, first item the kind). Server to model: ``init``, ``autocomplete``,
``execute``, ``finalize`` (commands, answered in order), ``reply`` (to an ``rpc``),
``bls_response``, ``is_ready`` (a readiness check, answered by ``ready``), ``windows`` (before
an ``execute``: the requests whose responses are flow controlled, and their windows), ``credit``
(the server's frontend took that many of a request's responses; -1: stop holding them, the
request was cancelled; key 0: every request, the model is unloading). Model to server:
``hello``, ``hooks`` (after ``init``: whether the model has ``is_ready``), ``done`` (a
command's answer), ``send`` (a response through a response sender), ``fail`` (close a request
with an error), ``rpc``, ``notify`` (an ``rpc`` without answer), ``bls``, ``bls_cancel``,
``ready``, ``reschedule`` (before a batch's ``executed``: requests released with RESCHEDULE).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import inspect
import itertools
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils
from triton_python_backend_utils._inference import InferenceResponse, SingleResponse
from triton_python_backend_utils._runtime import (
    BLS_OUTSIDE_EXECUTE,
    MetricsBackend,
    ResponseChannel,
    installed_runtime,
    pop_runtime,
    push_runtime,
    set_fallback_runtime,
)

from triton_backend_python._inbox import Inbox
from triton_backend_python._ring import Ring
from triton_backend_python._runner import ExecuteError, ModelRunner, run_auto_complete
from triton_backend_python._wire import (
    SHM_DIR,
    SharedMemoryFullError,
    SlabPool,
    SlabReader,
    decode,
    pack_frame,
    put_frame,
)

SPIN_SECONDS = 30e-6
"""How long the reader looks at an empty ring before it sleeps on the doorbell, when the last
frame came that soon after the ring went empty (see ``Stub._read_message``)."""
RING_FULL_SECONDS = 60.0
"""How long a message waits for room in a ring the server does not read before the process
gives up (the server is stuck, or gone without closing the lifeline)."""

ResponseTuple = tuple[dict[str, Any] | None, tuple[int, str] | None, dict[str, Any] | None, bool]
"""(outputs, (error code, message), parameters, final) as responses travel."""


def response_tuple(response: InferenceResponse | None, final: bool) -> ResponseTuple:
    """A response in the form the wire carries."""
    if response is None:
        return None, None, None, final
    error = response._error
    if error is not None:
        return None, (error._code, error._message), response._parameters, final
    return response._outputs(), None, response._parameters, final


def response_object(outputs: Any, error: Any, parameters: Any) -> InferenceResponse:
    """A response from its wire form."""
    tensors = [pb_utils.Tensor._wrap(n, a) for n, a in (outputs or {}).items()]
    failure = None if error is None else pb_utils.TritonError(error[1], error[0])
    return InferenceResponse._make(tensors, failure, parameters)


class _Call:
    """A pending ``rpc``: the caller waits on it, whichever thread reads the answer fills it."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: str | None = None


class _Flow:
    """Credit-based flow control of one request's responses (a streaming frontend's limit of
    unread responses, see ``InferenceRequest.limit_unread_responses`` in the kernel): a thread
    sending a response while ``window`` sent ones are not yet taken by the server's frontend
    waits for credit, as a bounded channel holds it in-process. So a slow client slows the
    model down instead of growing the server's memory."""

    __slots__ = ("granted", "lock", "released", "sent", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.sent = 0
        """Responses sent (by the model's threads, under ``lock``)."""
        self.granted = 0
        """Responses the server's frontend took (written by the reading thread only)."""
        self.released = False
        """Cancelled, or the model is unloading: never hold a sender again."""
        self.lock = threading.Lock()

    def has_room(self) -> bool:
        return self.released or self.sent - self.granted < self.window


class _Channel:
    """Responses of one received request, to the server."""

    __slots__ = ("_closed", "_flow", "_key", "_one", "_stub")

    def __init__(self, stub: Stub, key: int, decoupled: bool, flow: _Flow | None) -> None:
        self._stub = stub
        self._key = key
        self._one = None if decoupled else SingleResponse()
        self._closed = False
        self._flow = flow

    def send(self, response: InferenceResponse | None, final: bool) -> None:
        if self._one is not None:
            response = self._one.take(response, final)  # Triton's one-response rule
            if response is None or not final:
                return
        if final:
            self._closed = True
        flow = self._flow
        if flow is not None:
            if final:
                self._stub.end_flow(self._key)
            else:
                self._wait_for_credit(flow)
        try:
            self._stub.send(("send", self._key, *response_tuple(response, final)))
        except SharedMemoryFullError as exc:
            # The response cannot travel: the request gets the reason instead, and is closed.
            self._closed = True
            self._stub.end_flow(self._key)
            self._stub.send(("fail", self._key, exc.strerror))

    def _wait_for_credit(self, flow: _Flow) -> None:
        """Hold the sending thread while ``window`` responses are unread by the server's
        frontend, reading the server's messages meanwhile when no other thread does. The
        model's event loop thread (``async def execute``) is never held: other requests'
        coroutines run there (the kernel does the same for its loop)."""
        if not flow.has_room() and asyncio._get_running_loop() is None:
            self._stub.wait_for(flow.has_room)
        with flow.lock:
            flow.sent += 1

    def is_cancelled(self) -> bool:
        return bool(self._stub.call("is_cancelled", self._key))

    def abandon(self) -> None:
        # Not decoupled: execute's return (or the server) answers the request.
        if not self._closed and self._one is None:
            self._closed = True
            if self._flow is not None:
                self._stub.end_flow(self._key)
            self._stub.send(
                ("fail", self._key, "the response sender was released without the final flag")
            )


class _Metrics:
    """Custom metrics kept by the server; handles are numbers the server gave out."""

    __slots__ = ("_stub",)

    def __init__(self, stub: Stub) -> None:
        self._stub = stub

    def create_family(self, name: str, description: str, kind: int) -> object:
        return self._stub.call("metric_family", name, description, kind)

    def release_family(self, family: object) -> None:
        self._stub.notify("metric_release_family", family)

    def create_metric(
        self, family: object, labels: Mapping[str, str], buckets: list[float] | None
    ) -> object:
        return self._stub.call("metric_new", family, dict(labels), buckets)

    def release_metric(self, metric: object) -> None:
        self._stub.notify("metric_release", metric)

    def update(self, metric: object, op: str, value: float) -> None:
        self._stub.notify("metric_update", metric, op, value)

    def value(self, metric: object) -> float:
        return float(self._stub.call("metric_value", metric))


class Stub:
    """The model process: its connection to the server and the runtime its model sees."""

    def __init__(
        self,
        sockets: tuple[socket.socket, socket.socket],
        rings: tuple[Ring, Ring],
        shm_prefix: str,
        shm_dir: str = SHM_DIR,
    ) -> None:
        self._sockets = sockets
        """The lifeline (also the doorbell to the server) and the doorbell from it."""
        self._in, self._out = rings
        self._send_lock = threading.Lock()
        self._pool = SlabPool(shm_prefix, shm_dir)
        self._reader = SlabReader(shm_dir, in_place=True)  # inputs read from the slab
        self._commands: collections.deque[tuple[Any, ...]] = collections.deque()
        self._calls: dict[int, _Call] = {}
        self._streams: dict[int, Callable[[ResponseTuple], None]] = {}
        self._async_streams: set[int] = set()
        """BLS streams awaited on the model's event loop (a thread there cannot read)."""
        self._inbox = Inbox(self._read_message, self._dispatch, lambda: bool(self._async_streams))
        self._ids = itertools.count(1)
        self._spin = False
        """Whether the last wait for a frame was shorter than ``SPIN_SECONDS``."""
        self._linger = 0.0
        """How long to look for the next request after the last batch (the server's ``linger``)."""
        self._runner: ModelRunner | None = None
        self._outputs: tuple[str, ...] = ()
        self._decoupled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[Any] = set()
        self._metrics = _Metrics(self)
        self._serving = False
        """Between the end of ``initialize`` and the start of ``finalize``: BLS allowed."""
        self._model_dir = ""
        self._flows: dict[int, _Flow] = {}
        """Flow controlled requests (``windows``), until their final response."""
        self._unloading = False
        """Set by ``credit`` for every request: windows that come later are ignored."""

    # -- connection ---------------------------------------------------------------------------

    def send(self, message: tuple[Any, ...]) -> None:
        """Send a message (any thread)."""
        ring = self._out
        frame = pack_frame(message, self._pool, ring.largest_frame)
        with self._send_lock:
            if not put_frame(ring, frame):
                deadline = time.monotonic() + RING_FULL_SECONDS
                while not put_frame(ring, frame):
                    if time.monotonic() > deadline:
                        raise ConnectionError("the server does not read its ring")
                    time.sleep(0.0005)
            ring.wake()

    def call(self, op: str, *args: Any) -> Any:
        """Ask the server ``op`` and wait for the answer.

        :raises TritonModelException: with the server's error message.
        """
        call_id = next(self._ids)
        pending = self._calls[call_id] = _Call()
        self.send(("rpc", call_id, op, args))
        self._inbox.wait_for(lambda: pending.done)
        if pending.error is not None:
            raise pb_utils.TritonModelException(pending.error)
        return pending.value

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, reading the server's messages meanwhile if nobody else does."""
        self._inbox.wait_for(done)

    def end_flow(self, key: int) -> None:
        """A flow controlled request is closed: forget its credit."""
        self._flows.pop(key, None)

    def _end_flows(self, requests: list[pb_utils.InferenceRequest]) -> None:
        """A failed batch: the server fails its requests."""
        if self._flows:
            for request in requests:
                self.end_flow(request._source)

    def _on_credit(self, key: int, count: int) -> None:
        if key == 0:  # unloading: nothing is held any more
            self._unloading = True
            flows = list(self._flows.values())
            self._flows.clear()
            for flow in flows:
                flow.released = True
            return
        flow = self._flows.get(key)
        if flow is None:
            return
        if count < 0:
            flow.released = True
            del self._flows[key]
        else:
            flow.granted += count

    def notify(self, op: str, *args: Any) -> None:
        """Tell the server ``op`` without waiting."""
        self.send(("notify", 0, op, args))

    def _read_message(self) -> Any:
        """The next message (blocking; one reader at a time), None when the server is gone.

        Before sleeping on the doorbell, the reader looks at the ring for up to
        ``SPIN_SECONDS`` if the last frame came within that time after the ring went empty
        (requests in a stream, several in flight): a frame found then costs the server no
        doorbell and this process no system call and no wake-up. One request at a time (the
        next comes a client's round trip later) it sleeps at once, and spends no CPU on it.
        """
        ring = self._in
        clock = time.perf_counter
        while True:
            frame = ring.take(self._take_slab)
            if frame is not None:
                return decode(frame, self._reader)
            started = clock()
            linger, self._linger = self._linger, 0.0
            if linger:  # the server's request: a client in sequence; polite, at most once
                deadline = started + linger
                while clock() < deadline:
                    os.sched_yield()  # whatever else wants this CPU runs first
                    if ring.ready():
                        break
                if ring.ready():
                    continue
                started = clock()
            elif self._spin:
                deadline = started + SPIN_SECONDS
                while clock() < deadline:
                    if ring.ready():
                        break
                else:
                    self._spin = False
                if not self._spin:
                    started = clock()
                else:
                    continue
            if not ring.wait():
                return None
            self._spin = clock() - started < SPIN_SECONDS

    def _take_slab(self, name: str, offset: int, size: int) -> bytearray:
        return self._reader.take(name, [offset], [size])[0]

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "reply":
            _, call_id, value, error = message
            pending = self._calls.pop(call_id)
            pending.value, pending.error = value, error
            pending.done = True
        elif kind == "credit":
            self._on_credit(message[1], message[2])
        elif kind == "windows":
            if not self._unloading:
                for key, window in message[1]:
                    self._flows[key] = _Flow(window)
        elif kind == "is_ready":
            threading.Thread(
                target=self._check_ready, name="triton-stub-ready", daemon=True
            ).start()
        elif kind == "bls_response":
            call_id, item = message[1], message[2:]
            deliver = self._streams.get(call_id)
            if item[3]:
                self._streams.pop(call_id, None)
            if deliver is not None:
                deliver(item)
            if item[3]:
                self._async_streams.discard(call_id)
        else:
            self._commands.append(message)

    # -- the runtime the model sees (triton_python_backend_utils._runtime.Runtime) -----------

    def response_channel(self, request: pb_utils.InferenceRequest) -> ResponseChannel:
        key = request._source
        assert isinstance(key, int)
        flow = self._flows.get(key) if self._flows else None
        return _Channel(self, key, self._decoupled, flow)

    def is_cancelled(self, request: pb_utils.InferenceRequest) -> bool:
        return bool(self.call("is_cancelled", request._source))

    def _bls(
        self,
        request: pb_utils.InferenceRequest,
        deliver: Callable[[ResponseTuple], None],
        on_loop: bool = False,
    ) -> int:
        call_id = next(self._ids)
        self._streams[call_id] = deliver
        if on_loop:
            self._async_streams.add(call_id)
        message = (
            "bls",
            call_id,
            request.model_name(),
            request._model_version,
            request._input_arrays(),
            tuple(request.requested_output_names()),
            request.request_id(),
            request.correlation_id(),
            request.flags(),
            request.timeout(),
            request._parameter_dict(),
            # trace=request.trace() of a received request: its key, to trace the call as a child
            None if request._trace is None else request._trace._source,
        )
        try:
            self.send(message)
        except SharedMemoryFullError as exc:
            self._streams.pop(call_id, None)
            self._async_streams.discard(call_id)
            raise pb_utils.TritonModelException(exc.strerror) from exc
        return call_id

    def _responses(self, items: collections.deque[ResponseTuple]) -> Iterator[InferenceResponse]:
        """A BLS stream's responses as they arrive (blocking), up to the final one."""
        while True:
            self._inbox.wait_for(lambda: bool(items))
            outputs, error, parameters, final = items.popleft()
            yield response_object(outputs, error, parameters)  # the last may be empty
            if final:
                return

    def _cancel(self, call_id: int) -> None:
        """Cancel a BLS call (``ResponseIterator.cancel()``): the server cancels its request."""
        if call_id in self._streams:
            self.send(("bls_cancel", call_id))

    def _check_bls(self) -> None:
        if not self._serving:
            raise pb_utils.TritonModelException(BLS_OUTSIDE_EXECUTE)

    def exec(self, request: pb_utils.InferenceRequest, decoupled: bool) -> Any:
        self._check_bls()
        items: collections.deque[ResponseTuple] = collections.deque()
        call_id = self._bls(request, items.append)
        if not decoupled:
            first: InferenceResponse | None = None
            while True:
                self._inbox.wait_for(lambda: bool(items))
                outputs, error, parameters, final = items.popleft()
                if first is None and (outputs or error or not final):
                    first = response_object(outputs, error, parameters)
                if final:
                    return first or response_object(outputs, error, parameters)
        return pb_utils.ResponseIterator(self._responses(items), lambda: self._cancel(call_id))

    def async_exec(self, request: pb_utils.InferenceRequest, decoupled: bool) -> Awaitable[Any]:
        self._check_bls()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def finish(value: Any) -> None:
            if not future.done():
                future.set_result(value)

        if decoupled:
            # Resolved at the first response: the iterator yields the others as they arrive.
            items: collections.deque[ResponseTuple] = collections.deque()
            call_ids: list[int] = []
            iterator = pb_utils.ResponseIterator(
                self._responses(items), lambda: self._cancel(*call_ids)
            )

            def arrived(item: ResponseTuple) -> None:
                items.append(item)
                if not future.done():
                    loop.call_soon_threadsafe(finish, iterator)

            call_ids.append(self._bls(request, arrived, on_loop=True))
            self._inbox.wake()  # nobody may be reading: the helper reads until the end
            return future

        collected: list[InferenceResponse] = []

        def deliver(item: ResponseTuple) -> None:
            outputs, error, parameters, final = item
            response = response_object(outputs, error, parameters)
            if outputs or error or not final:
                collected.append(response)
            if final:
                loop.call_soon_threadsafe(finish, collected[0] if collected else response)

        self._bls(request, deliver, on_loop=True)
        self._inbox.wake()  # nobody may be reading: the helper reads until the answer came
        return future

    def log(self, level: int, message: str) -> None:
        self.notify("log", level, message)

    @property
    def metrics(self) -> MetricsBackend:
        return self._metrics

    def load_model(self, name: str, config: str, files: Mapping[str, bytes] | None) -> None:
        self.call("load_model", name, config, dict(files) if files else None)

    def unload_model(self, name: str, unload_dependents: bool) -> None:
        self.call("unload_model", name, unload_dependents)

    def is_model_ready(self, name: str, version: str) -> bool:
        return bool(self.call("is_model_ready", name, version))

    def model_dir(self) -> str:
        return self._model_dir

    # -- commands -----------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer commands until ``finalize``."""
        self._inbox.start_helper()
        self.send(("hello", os.getpid(), sys.version))
        commands = self._commands
        while True:
            self._inbox.wait_for(lambda: bool(commands))
            message = commands.popleft()
            kind = message[0]
            if kind == "init":
                self._initialize(*message[1:])
            elif kind == "execute":
                self._execute(message[1], message[2])
                # answered: look for the next request this long before sleeping (the server
                # asks for it when one client sends one request at a time)
                self._linger = message[3]
            elif kind == "autocomplete":
                self._auto_complete(*message[1:])
            elif kind == "finalize":
                self._finalize()
                return

    def _run(self, result: object) -> object:
        """Wait for ``result`` when a hook returned an awaitable (on the model's event loop)."""
        if not inspect.isawaitable(result):
            return result
        return asyncio.run_coroutine_threadsafe(self._await(result), self._event_loop()).result()

    @staticmethod
    async def _await(awaitable: Awaitable[Any]) -> Any:
        return await awaitable

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = self._loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="triton-stub-loop", daemon=True).start()
        return self._loop

    def _initialize(
        self,
        path: str,
        instance_name: str,
        decoupled: bool,
        outputs: tuple[str, ...],
        args: dict[str, str],
    ) -> None:
        self._decoupled = decoupled
        self._outputs = outputs
        # Triton's stub: the folder of the version whose model.py it loaded
        self._model_dir = os.path.join(args["model_repository"], args["model_version"])
        set_fallback_runtime(self)
        runner = ModelRunner(Path(path), instance_name, decoupled, as_triton=True)
        try:
            with installed_runtime(self):
                runner.load()
                self._runner = runner
                self._run(runner.initialize(args))
        except BaseException as exc:
            self.send(("done", f"{type(exc).__name__}: {exc}"))
            return
        self._serving = True
        self.send(("hooks", getattr(runner.model, "is_ready", None) is not None))
        self.send(("done", None))

    def _check_ready(self) -> None:
        """Answer a readiness check with the model's ``is_ready()`` (in a thread of its own:
        the main thread may be executing)."""
        error: str | None = None
        answer = False
        try:
            hook = getattr(self._runner.model if self._runner else None, "is_ready", None)
            if hook is not None:
                with installed_runtime(self):
                    value = self._run(hook())
                answer = value is True
                if not isinstance(value, bool):
                    error = f"is_ready() returned {type(value).__name__}, expected a bool"
        except BaseException as exc:
            error = f"is_ready() raised {type(exc).__name__}: {exc}"
        self.send(("ready", answer, error))

    def _auto_complete(self, path: str, label: str, config: str) -> None:
        try:
            result = run_auto_complete(Path(path), label, config, as_triton=True)
        except BaseException as exc:
            self.send(("done", None, f"{exc}"))
            return
        self.send(("done", result, None))

    def _execute(self, batch_id: int, items: list[tuple[Any, ...]]) -> None:
        runner = self._runner
        assert runner is not None
        received = pb_utils.InferenceRequest._received
        outputs = self._outputs
        requests = [
            received(self, key, inputs, requested or outputs, rid, corr, flags, timeout, params)
            for key, inputs, requested, rid, corr, flags, timeout, params in items
        ]
        token = push_runtime(self)
        try:
            if runner.is_async and self._decoupled:
                # Triton runs a decoupled coroutine in the background: the next batch may start.
                future = asyncio.run_coroutine_threadsafe(
                    self._in_background(runner, requests), self._event_loop()
                )
                self._background.add(future)
                future.add_done_callback(self._background.discard)
                self.send(("executed", batch_id, None, None, []))
                return
            responses = runner.check(requests, self._run(runner.execute(requests)))
        except ExecuteError as exc:
            self._end_flows(requests)
            self.send(("executed", batch_id, None, str(exc), []))
            return
        except Exception as exc:
            traceback.print_exc()
            self._end_flows(requests)
            self.send(("executed", batch_id, None, str(runner.raised(exc)), []))
            return
        finally:
            pop_runtime(token)
        results = (
            None
            if responses is None
            else [None if r is None else response_tuple(r, True) for r in responses]
        )
        rescheduled = [r._source for r in requests if r._rescheduled()]
        if self._flows:  # requests the model did not answer, or gave back, are closed here
            for r in requests:
                if r._sender is None or r._rescheduled():
                    self.end_flow(r._source)
        if rescheduled:  # before "executed": the server hands them back to its scheduler
            self.send(("reschedule", rescheduled))
        unanswered = (
            [r._source for r in requests if r._sender is None and not r._rescheduled()]
            if self._decoupled
            else []
        )
        try:
            self.send(("executed", batch_id, results, None, unanswered))
        except SharedMemoryFullError as exc:
            text = runner.failure(str(exc.strerror))
            self.send(("executed", batch_id, None, text, unanswered))

    async def _in_background(
        self, runner: ModelRunner, requests: list[pb_utils.InferenceRequest]
    ) -> None:
        token = push_runtime(self)
        try:
            runner.check(requests, await runner.execute(requests))
        except Exception as exc:
            text = str(exc) if isinstance(exc, ExecuteError) else str(runner.raised(exc))
            for request in requests:
                self.end_flow(request._source)
                self.send(("fail", request._source, text))
            return
        finally:
            pop_runtime(token)
        for request in requests:
            if request._sender is None:
                self.end_flow(request._source)
                self.send(("fail", request._source, None))

    def _finalize(self) -> None:
        error: str | None = None
        runner = self._runner
        self._serving = False
        if runner is not None:
            try:
                with installed_runtime(self):
                    self._run(runner.finalize())
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
            runner.close()
        self.send(("done", error))

    def close(self) -> None:
        self._in.close()
        self._out.close()
        self._pool.close()
        self._reader.close()
        for sock in self._sockets:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    """Serve one model instance over the inherited socket ``--fd``."""
    parser = argparse.ArgumentParser(prog="triton_backend_python._stub")
    parser.add_argument("--fd", type=int, required=True, help="lifeline; doorbell to the server")
    parser.add_argument("--bell-fd", type=int, required=True, help="doorbell from the server")
    parser.add_argument("--shm-prefix", required=True)
    parser.add_argument("--shm-dir", default=SHM_DIR)
    parser.add_argument("--name", default="")
    parser.add_argument("--rings", required=True, help="the rings in and out (memfds)")
    options = parser.parse_args(argv)
    ring_in, ring_out = (int(fd) for fd in options.rings.split(","))
    rings = (Ring(ring_in, options.bell_fd), Ring(ring_out, options.fd))
    os.close(ring_in)  # mapped: the descriptors are no longer needed
    os.close(ring_out)
    sys.argv[:] = [""]  # what Triton's embedded interpreter shows a model
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    sockets = (socket.socket(fileno=options.fd), socket.socket(fileno=options.bell_fd))
    stub = Stub(sockets, rings, options.shm_prefix, options.shm_dir)
    try:
        stub.serve()
    except ConnectionError:
        return 0  # the server went away (it stopped, or gave up on this start)
    finally:
        stub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
