"""Inference requests and responses as backends see them.

A request is answered through itself: ``request.respond(outputs)`` exactly once, or, for a
decoupled model, through ``request.response_sender()``, which sends zero or more responses and
exactly one final flag. Both may be called from any thread. The kernel guarantees the client one
final answer per request: a second final answer raises :class:`KernelError` in the backend and
never reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel._instance_thread import defer as defer_to_batch_end

if TYPE_CHECKING:
    from kernel._tracing import RequestTrace

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "ParameterValue",
    "RequestFlags",
    "ResponseSender",
]

ParameterValue = bool | int | float | str
"""What a request or response parameter may hold (the protocol's ``InferParameter`` choices)."""


class RequestFlags(enum.IntFlag):
    """Triton's request flags (``TRITONSERVER_RequestFlag``) for sequences."""

    NONE = 0
    SEQUENCE_START = 1
    SEQUENCE_END = 2


@dataclass(slots=True)
class InferenceResponse:
    """One response: named output arrays, parameters, or an error.

    ``outputs`` are numpy arrays keyed by output name; BYTES outputs are object arrays of
    ``bytes`` (``str`` items are encoded as UTF-8 on the wire).
    """

    outputs: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    error: KernelError | None = None
    final: bool = True
    """Set by the kernel: whether this is the request's last response."""
    sent_ns: int = 0
    """Set by the kernel: when a response sender sent it (decoupled models' response stats)."""


_ROOM_WAIT_SECS = 0.5
"""How long a held producer sleeps between checks (a detach also wakes it at once)."""

UNHELD_FACTOR = 4
"""A producer the kernel cannot hold (one sending on the event loop: an ``async def execute``)
may run this many times the unread limit ahead of the frontend; past that the request is
cancelled and ended with an error, so a client that stops reading costs bounded memory."""

ResponseInterceptor = Callable[[InferenceResponse, Callable[[InferenceResponse], None]], None]
"""For the kernel's schedulers: sees each response on the event loop before the client does, and
passes it on by calling the given ``release`` (at once, or later to keep responses in order)."""


class _ResponseChannel:
    """The one-way, thread-safe path from a backend's answers to the frontend awaiting them."""

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_capacity",
        "_closed",
        "_detached",
        "_lock",
        "_loop",
        "_loop_thread",
        "_on_detached",
        "_on_overflow",
        "_on_taken",
        "_overflowed",
        "_room",
        "_unread",
        "_waiter",
        "interceptor",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._closed = False
        self._buffer: deque[InferenceResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.interceptor: ResponseInterceptor | None = None
        # Flow control (opt-in, see bound): responses pushed and not yet taken by the frontend.
        self._capacity = 0
        self._unread = 0
        self._detached = False
        self._room: threading.Condition | None = None
        # A producer held elsewhere (a model process) is told on the loop (see watch_reading).
        self._on_taken: Callable[[], None] | None = None
        self._on_detached: Callable[[], None] | None = None
        # A producer that cannot be held and ran too far ahead (see UNHELD_FACTOR).
        self._on_overflow: Callable[[], None] | None = None
        self._overflowed = False

    @property
    def capacity(self) -> int:
        """The bound (0: none)."""
        return self._capacity

    @property
    def detached(self) -> bool:
        return self._detached

    def watch(self, on_taken: Callable[[], None], on_detached: Callable[[], None]) -> None:
        self._on_taken = on_taken
        self._on_detached = on_detached

    def _tell_detached(self) -> None:
        on_detached, self._on_detached = self._on_detached, None
        self._on_taken = None
        if on_detached is None:
            return
        if threading.get_ident() == self._loop_thread or self._loop is None:
            on_detached()
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is held any more
                self._loop.call_soon_threadsafe(on_detached)

    @property
    def closed(self) -> bool:
        return self._closed

    def bound(self, capacity: int, on_overflow: Callable[[], None] | None = None) -> None:
        """Hold a producer thread while ``capacity`` responses wait for the frontend; a
        producer on the loop (never held) that gets ``UNHELD_FACTOR`` times further ahead ends
        the request (``on_overflow`` cancels it)."""
        self._capacity = capacity
        self._room = threading.Condition(self._lock)
        self._on_overflow = on_overflow

    def unbound(self) -> None:
        """No flow control (before the first response): see ``intercept_responses``."""
        self._capacity = 0
        self._room = None

    def detach(self) -> None:
        """The frontend stopped reading (client gone): never hold a producer again."""
        room = self._room
        if room is None:
            self._detached = True
            return
        with room:
            self._detached = True
            room.notify_all()
        self._tell_detached()

    def _wait_for_room(self, room: threading.Condition) -> None:
        """Block the calling (backend) thread while the frontend is ``capacity`` responses
        behind; called with the lock held. Waits in slices: each re-checks for a detach."""
        while self._unread >= self._capacity and not self._detached and not self._closed:
            room.wait(_ROOM_WAIT_SECS)

    def push(self, response: InferenceResponse, *, final: bool, defer: bool = False) -> None:
        """Hand ``response`` to the loop. With ``defer``, from an instance thread running a
        batch, it travels with the batch's completion instead of waking the loop itself
        (:func:`kernel._instance_thread.defer` decides).

        With a :meth:`bound`, a non-final response pushed from a thread other than the loop's
        waits for room first (backpressure from a slow client up to the model); on the loop's
        thread, which must never block, it is buffered beyond the bound."""
        room = self._room
        with self._lock:
            if self._overflowed:
                return  # ended for a client that stopped reading: the rest goes nowhere
            if room is not None and not final:
                if threading.get_ident() != self._loop_thread:
                    self._wait_for_room(room)
                elif self._unread >= self._capacity * UNHELD_FACTOR and not self._closed:
                    self._overflowed = self._closed = True
                    ahead = self._unread
                    self._unread += 1
                    self._overflow(ahead)
                    return
            if self._closed:
                raise KernelError(
                    Status.INTERNAL, "the request has already received its final response"
                )
            self._closed = final
            if room is not None:
                self._unread += 1
        response.final = final
        if threading.get_ident() == self._loop_thread or self._loop is None:
            self._deliver(response)
            return
        if defer and defer_to_batch_end(self._deliver, response):
            return
        # A closed loop means nobody waits for this answer any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, response)

    def _overflow(self, ahead: int) -> None:
        """On the loop: a producer that cannot be held ran ``ahead`` responses in front of a
        client that stopped reading. The request ends with an error after what is already
        buffered (delivered on the loop's next turn, outside the caller's lock), it is
        cancelled (``on_overflow``), and what the producer sends after that is dropped."""
        error = KernelError(
            Status.CANCELLED,
            f"the client did not read the request's responses ({ahead} waited unread): "
            "the request was cancelled",
        )
        response = InferenceResponse(error=error)
        response.final = True
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self._deliver, response)
        if self._on_overflow is not None:
            loop.call_soon(self._on_overflow)

    def _deliver(self, response: InferenceResponse) -> None:
        if self.interceptor is not None:
            self.interceptor(response, self._release)
            return
        self._buffer.append(response)  # _release, inlined: once per response
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self, response: InferenceResponse) -> None:
        self._buffer.append(response)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abandon(self, reason: str) -> None:
        """Close with an error unless a final response was already sent."""
        with contextlib.suppress(KernelError):
            self.push(InferenceResponse(error=KernelError(Status.INTERNAL, reason)), final=True)

    async def get(self) -> InferenceResponse:
        while not self._buffer:
            loop = self._loop or asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        response = self._buffer.popleft()
        room = self._room
        if room is not None:
            with room:
                self._unread -= 1
                room.notify()
            on_taken = self._on_taken
            if on_taken is not None:
                on_taken()
        return response


class ResponseSender:
    """Sends a decoupled model's responses: zero or more, then exactly one final flag.

    Thread-safe. If every reference to the sender is dropped before the final flag was sent,
    the kernel closes the request with an error, so a client never waits forever.
    """

    __slots__ = ("__weakref__", "_channel")

    def __init__(self, channel: _ResponseChannel) -> None:
        self._channel = channel
        weakref.finalize(
            self, channel.abandon, "the response sender was released without the final flag"
        )

    def send(self, response: InferenceResponse | None = None, *, final: bool = False) -> None:
        """Send ``response`` (may be ``None`` when ``final`` only closes the stream).

        :raises KernelError: ``INTERNAL`` after the final flag was already sent, or when
            ``response`` is ``None`` and ``final`` is false.
        """
        if response is None:
            if not final:
                raise KernelError(Status.INTERNAL, "a response sender needs a response or final")
            response = InferenceResponse()  # a final flag without data
        response.sent_ns = time.monotonic_ns()
        self._channel.push(response, final=final)

    @property
    def is_closed(self) -> bool:
        """Whether the final flag was sent."""
        return self._channel.closed


class InferenceRequest:
    """One inference request, as a frontend decoded it.

    Inputs are numpy arrays keyed by input name and may be read-only views of the wire bytes:
    a backend never writes into them. ``requested_output_names`` is empty when the client asked
    for every output.
    """

    __slots__ = (
        "__weakref__",
        "_admitted",
        "_cancelled",
        "_channel",
        "_sender",
        "arrival_ns",
        "batch_size",
        "correlation_id",
        "enqueued_ns",
        "flags",
        "id",
        "inputs",
        "model_name",
        "model_version",
        "parameters",
        "priority",
        "requested_output_names",
        "rescheduled",
        "started_ns",
        "timeout_us",
        "trace",
    )

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        *,
        model_version: int = -1,
        id: str = "",  # noqa: A002 - the protocol's name
        requested_output_names: Sequence[str] = (),
        parameters: Mapping[str, ParameterValue] | None = None,
        correlation_id: int | str = 0,
        flags: RequestFlags = RequestFlags.NONE,
        priority: int = 0,
        timeout_us: int = 0,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.inputs: dict[str, npt.NDArray[Any]] = dict(inputs)
        self.requested_output_names: tuple[str, ...] = tuple(requested_output_names)
        self.parameters: dict[str, ParameterValue] = dict(parameters) if parameters else {}
        self.correlation_id = correlation_id
        self.flags = flags
        self.priority = priority
        self.timeout_us = timeout_us
        self.arrival_ns = time.monotonic_ns()
        # Set by the kernel when it accepts the request:
        self.batch_size = 1
        """Rows this request contributes to a batch (1 for models without batching)."""
        self.enqueued_ns = 0
        self.started_ns = 0
        self.rescheduled = False
        """Set by :meth:`reschedule`; the kernel clears it when it requeues the request."""
        """When ``execute`` took the request (decoupled models only: their response stats)."""
        self._cancelled = False
        self._admitted = False  # counted by its model version's Admissions (kernel._admissions)
        self.trace: RequestTrace | None = None
        """Set by the kernel when the request is traced (``--trace-config``)."""
        self._sender: ResponseSender | None = None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._channel = _ResponseChannel(loop)

    def __repr__(self) -> str:
        return f"<InferenceRequest {self.model_name!r} id={self.id!r} inputs={list(self.inputs)}>"

    # -- answering --------------------------------------------------------------------------

    def respond(
        self,
        outputs: Mapping[str, npt.NDArray[Any]] | None = None,
        *,
        error: KernelError | BaseException | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> None:
        """Answer the request once, with outputs or an error. Thread-safe.

        :raises KernelError: ``INTERNAL`` if the request was already answered.
        """
        ndarray = np.ndarray
        response = InferenceResponse(
            {
                name: value if type(value) is ndarray else np.asarray(value)
                for name, value in (outputs or {}).items()
            },
            dict(parameters) if parameters else {},
            None if error is None else KernelError.wrap(error),
        )
        self._channel.push(response, final=True, defer=True)

    def intercept_responses(self, interceptor: ResponseInterceptor, *, holds: bool = False) -> None:
        """For the kernel's schedulers, before the request executes: route every response of
        this request through ``interceptor`` before the client sees it (sequence state,
        ``preserve_ordering``). ``holds``: it may keep responses back until other requests
        answered (response order); the request's :meth:`limit_unread_responses` is then
        lifted, since a model held for responses kept back could wait on itself."""
        self._channel.interceptor = interceptor
        if holds:
            self._channel.unbound()

    def reschedule(self) -> None:
        """For backends (``TRITONSERVER_REQUEST_RELEASE_RESCHEDULE``): once ``execute`` returns,
        give this unfinished request back to the model's scheduler, to execute again in a later
        batch (responses already sent stay sent). Only ``sequence_batching { iterative_sequence:
        true }`` takes it back; any other scheduler fails the request with Triton's message."""
        self.rescheduled = True

    def response_sender(self) -> ResponseSender:
        """The sender for decoupled models (the same object on every call)."""
        if self._sender is None:
            self._sender = ResponseSender(self._channel)
        return self._sender

    @property
    def answered(self) -> bool:
        """Whether the final response was sent."""
        return self._channel._closed

    def fail(self, error: KernelError) -> bool:
        """Send ``error`` as the final response unless one was sent; ``True`` if this did."""
        try:
            self._channel.push(InferenceResponse(error=error), final=True)
        except KernelError:
            return False
        return True

    async def responses(self) -> AsyncIterator[InferenceResponse]:
        """Every response in order, the last one carrying ``final=True`` (for frontends)."""
        while True:
            response = await self._channel.get()
            yield response
            if response.final:
                return

    def final_response(self) -> Coroutine[Any, Any, InferenceResponse]:
        """The single response of a non-decoupled request (for frontends): a coroutine to
        await (the channel's own, without a frame of its own on every request's path)."""
        return self._channel.get()

    # -- cancellation -----------------------------------------------------------------------

    def cancel(self) -> None:
        """Mark the request cancelled (client gone or timed out); backends may check it.
        A backend thread held by :meth:`limit_unread_responses` is let go."""
        self._cancelled = True
        self._channel.detach()

    def limit_unread_responses(self, capacity: int) -> None:
        """For frontends that stream (before submitting): once ``capacity`` responses wait
        unread, a backend thread sending another one blocks until the frontend takes one, or
        the request is cancelled. A slow client so slows the model down instead of growing the
        server's memory. Responses sent on the event loop (``async def execute``) are never
        held: they are buffered past the limit, up to ``UNHELD_FACTOR`` times it, where the
        request is cancelled and ends with a ``CANCELLED`` error. A backend whose producer runs
        elsewhere (a Python model's process) holds it itself: see :meth:`watch_reading`."""
        if capacity > 0:
            self._channel.bound(capacity, self.cancel)

    @property
    def unread_limit(self) -> int:
        """The limit :meth:`limit_unread_responses` set (0: none)."""
        return self._channel.capacity

    def watch_reading(self, on_taken: Callable[[], None], on_detached: Callable[[], None]) -> int:
        """For backends whose producer the kernel cannot hold (a model in another process,
        which sends on the event loop): returns :attr:`unread_limit`, and when it is not 0,
        ``on_taken`` is called (on the loop) each time the frontend takes a response, and
        ``on_detached`` once (on the loop) when it stops reading (the request is cancelled),
        so the backend can hold its producer at the limit itself (credits). Returns 0, and
        registers nothing, without a limit or once the request is cancelled. Call it on the
        loop, before the request's first response."""
        channel = self._channel
        if channel.capacity <= 0 or channel.detached:
            return 0
        channel.watch(on_taken, on_detached)
        return channel.capacity

    def is_cancelled(self) -> bool:
        """Whether the client is gone or the request timed out."""
        return self._cancelled

    @property
    def sender_taken(self) -> bool:
        """Whether the backend asked for the response sender (decoupled answering)."""
        return self._sender is not None
