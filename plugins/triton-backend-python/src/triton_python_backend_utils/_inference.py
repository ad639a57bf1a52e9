"""Requests, responses, response senders and BLS calls, as the Python backend API defines them.

One ``InferenceRequest`` class serves both directions, as in Triton: the backend builds them
for ``execute`` (received requests, answered through the request), and a model builds them to
call another model (BLS: ``exec`` / ``async_exec``). Objects are slot classes and request
parameters are turned into JSON only when asked: this is the per-request path.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy.typing as npt

from triton_python_backend_utils._constants import (
    TRITONSERVER_REQUEST_RELEASE_ALL,
    TRITONSERVER_REQUEST_RELEASE_RESCHEDULE,
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    MemoryType,
)
from triton_python_backend_utils._errors import TritonError, TritonModelException
from triton_python_backend_utils._runtime import ResponseChannel, Runtime, current_runtime
from triton_python_backend_utils._tensor import Tensor

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "InferenceResponseSender",
    "InferenceTrace",
    "PreferredMemory",
    "ResponseIterator",
    "SingleResponse",
    "as_name",
    "check_parameters",
]

MORE_THAN_ONE = "Unable to send response. Non-decoupled model cannot send more than one response."
FINAL_BEFORE_RESPONSE = (
    "Unable to send response. Non-decoupled model cannot send complete final before sending a"
    " response."
)

ParameterValue = bool | int | float | str


def as_name(value: object, what: str = "model_name") -> str:
    """A name given as ``str`` or ``bytes`` (Triton's API takes both: a model name read from a
    BYTES tensor is ``bytes``), as text.

    :raises TritonModelException: for bytes that are not UTF-8.
    """
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as exc:
            raise TritonModelException(f"{what} is not valid UTF-8: {value!r}") from exc
    return str(value)


def check_parameters(parameters: object, where: str) -> dict[str, ParameterValue]:
    """A parameters dict (or its JSON text) as a dict of str -> bool/int/float/str.

    :raises TritonModelException: for another type of key or value.
    """
    if parameters is None:
        return {}
    if isinstance(parameters, str | bytes):
        try:
            parameters = json.loads(parameters)
        except ValueError as exc:
            raise TritonModelException(f"{where}: parameters are not valid JSON: {exc}") from exc
    if not isinstance(parameters, Mapping):
        raise TritonModelException(f"{where}: parameters must be a dict")
    for key, value in parameters.items():
        if not isinstance(key, str) or not isinstance(value, bool | int | float | str):
            raise TritonModelException(
                f"{where}: expect parameters keys to have type str and values to have type"
                f" bool, int, float or str, found {key!r}: {type(value).__name__}"
            )
    return dict(parameters)


class PreferredMemory:
    """Where a BLS caller wants its output tensors (CPU is the only memory here)."""

    __slots__ = ("preferred_device_id", "preferred_memory_type")

    def __init__(
        self,
        preferred_memory_type: MemoryType | int = MemoryType.TRITONSERVER_MEMORY_CPU,
        preferred_device_id: int = 0,
    ) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    """A request's trace: ``trace=request.trace()`` on a BLS request traces the call as a child
    of ``request`` when the server traces it (``--trace-config``). There is no OpenTelemetry
    context: :meth:`get_context` is always None."""

    __slots__ = ("_source",)

    def __init__(self, _source: object = None) -> None:
        self._source = _source
        """The received request's handle for the runtime (``None``: not a received request)."""

    def get_context(self) -> str | None:
        return None


_NO_TRACE = InferenceTrace()


class InferenceResponse:
    """One response: output tensors, or an error; optionally parameters."""

    __slots__ = ("_error", "_output_tensors", "_parameters")

    def __init__(
        self,
        output_tensors: Iterable[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: Mapping[str, ParameterValue] | str | None = None,
    ) -> None:
        if error is not None and not isinstance(error, TritonError):
            raise TritonModelException("InferenceResponse(): 'error' must be a TritonError")
        tensors = [] if output_tensors is None else list(output_tensors)
        for tensor in tensors:
            if not isinstance(tensor, Tensor):
                raise TritonModelException(
                    "InferenceResponse(): 'output_tensors' must be a list of Tensor objects,"
                    f" found {type(tensor).__name__}"
                )
        self._output_tensors = tensors
        self._error = error
        self._parameters = (
            None if parameters is None else check_parameters(parameters, "InferenceResponse()")
        )

    @classmethod
    def _make(
        cls,
        tensors: list[Tensor],
        error: TritonError | None,
        parameters: dict[str, ParameterValue] | None,
    ) -> InferenceResponse:
        """A response from parts known to be valid (no checks)."""
        response = cls.__new__(cls)
        response._output_tensors = tensors
        response._error = error
        response._parameters = parameters or None
        return response

    def output_tensors(self) -> list[Tensor]:
        """The output tensors."""
        return self._output_tensors

    def has_error(self) -> bool:
        """Whether the response carries an error."""
        return self._error is not None

    def error(self) -> TritonError | None:
        """The response's error, or None."""
        return self._error

    def parameters(self) -> str:
        """The response parameters as JSON text (``"{}"`` when none)."""
        return json.dumps(self._parameters or {})

    def _outputs(self) -> dict[str, npt.NDArray[Any]]:
        """Output arrays by name (for the backend)."""
        return {t._name: t._array for t in self._output_tensors}

    def __repr__(self) -> str:
        names = [t._name for t in self._output_tensors]
        return f"InferenceResponse(outputs={names}, error={self._error!r})"


class InferenceResponseSender:
    """Sends a request's responses: any number, then one ``TRITONSERVER_RESPONSE_COMPLETE_FINAL``.

    Thread-safe: a decoupled model may hand it to another thread. Released without the final
    flag, it closes the request with an error so the client does not wait forever.
    """

    __slots__ = ("__weakref__", "_channel", "_closed", "_finalizer")

    def __init__(self, channel: ResponseChannel) -> None:
        self._channel = channel
        self._closed = False
        self._finalizer = weakref.finalize(self, channel.abandon)

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        """Send ``response``; with ``flags=TRITONSERVER_RESPONSE_COMPLETE_FINAL`` the last one.

        :raises TritonModelException: after the final flag was sent, or without a response
            when the flags are not final.
        """
        if self._closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None:
            if not final:
                raise TritonModelException(
                    "Inference Response object must be provided when the response flags is not"
                    " equal to TRITONSERVER_RESPONSE_COMPLETE_FINAL."
                )
        elif not isinstance(response, InferenceResponse):
            raise TritonModelException(
                f"send() expects an InferenceResponse, found {type(response).__name__}"
            )
        self._channel.send(response, final)  # first: a refused send leaves the sender open
        if final:
            self._closed = True
            self._finalizer.detach()

    def is_cancelled(self) -> bool:
        """Whether the request was cancelled (client gone or timed out)."""
        return self._channel.is_cancelled()


class SingleResponse:
    """Triton's rule for a non-decoupled model answering through its response sender: exactly
    one response, then the final flag (in the same ``send`` or a later one).

    Not thread-safe on its own: a channel calls it under its own lock, if any.
    """

    __slots__ = ("held", "sent")

    def __init__(self) -> None:
        self.held: InferenceResponse | None = None
        self.sent = False

    def take(self, response: InferenceResponse | None, final: bool) -> InferenceResponse | None:
        """The response to deliver now (None: nothing yet).

        :raises TritonModelException: with Triton's message, for a second response or a final
            flag before any response.
        """
        if response is not None:
            if self.held is not None or self.sent:
                raise TritonModelException(MORE_THAN_ONE)
            if not final:
                self.held = response
                return None
        elif final:
            if self.held is None:
                raise TritonModelException(FINAL_BEFORE_RESPONSE)
            response, self.held = self.held, None
        self.sent = True
        return response


class ResponseIterator:
    """The responses of a BLS call on a decoupled model, in order, the last one final."""

    __slots__ = ("_cancel", "_source")

    def __init__(
        self, source: Iterator[InferenceResponse], cancel: Callable[[], None] | None = None
    ) -> None:
        self._source = source
        self._cancel = cancel

    def __iter__(self) -> ResponseIterator:
        return self

    def __next__(self) -> InferenceResponse:
        return next(self._source)

    def cancel(self) -> None:
        """Ask the called model to stop (the request is marked cancelled)."""
        if self._cancel is not None:
            self._cancel()


class InferenceRequest:
    """A request: received by ``execute``, or built by a model to call another model (BLS).

    Build one for BLS with keyword arguments::

        pb_utils.InferenceRequest(model_name="add_sub", inputs=[tensor, ...],
                                  requested_output_names=["OUTPUT0"])
    """

    __slots__ = (
        "_correlation_id",
        "_flags",
        "_inputs",
        "_model_name",
        "_model_version",
        "_parameters",
        "_preferred_memory",
        "_release_flags",
        "_request_id",
        "_requested",
        "_runtime",
        "_sender",
        "_source",
        "_tensors",
        "_timeout",
        "_trace",
    )

    def __init__(
        self,
        *,
        model_name: str,
        inputs: Sequence[Tensor],
        requested_output_names: Sequence[str],
        request_id: str = "",
        correlation_id: int | str = 0,
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: PreferredMemory | None = None,
        trace: InferenceTrace | None = None,
        parameters: Mapping[str, ParameterValue] | str | None = None,
    ) -> None:
        if not isinstance(correlation_id, int | str):
            raise TritonModelException("Correlation ID must be integer or string")
        tensors = list(inputs)
        for tensor in tensors:
            if not isinstance(tensor, Tensor):
                raise TritonModelException(
                    "InferenceRequest(): 'inputs' must be a list of Tensor objects"
                )
        self._model_name = as_name(model_name)
        self._model_version = int(model_version)
        self._tensors: list[Tensor] | None = tensors
        self._inputs: dict[str, npt.NDArray[Any]] | None = None
        self._requested: Sequence[str] = [
            as_name(n, "requested_output_names") for n in requested_output_names
        ]
        self._request_id = str(request_id)
        self._correlation_id = correlation_id
        self._flags = int(flags)
        self._timeout = int(timeout)
        self._parameters: dict[str, ParameterValue] | str | None = check_parameters(
            parameters, "InferenceRequest()"
        )
        self._preferred_memory = preferred_memory
        self._trace = trace
        """``trace=request.trace()``: the BLS request is traced as a child of that request."""
        self._source: object = None
        self._runtime: Runtime | None = None
        self._sender: InferenceResponseSender | None = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    @classmethod
    def _received(
        cls,
        runtime: Runtime,
        source: object,
        inputs: dict[str, npt.NDArray[Any]],
        requested: Sequence[str],
        request_id: str,
        correlation_id: int | str,
        flags: int,
        timeout: int,
        parameters: dict[str, ParameterValue],
    ) -> InferenceRequest:
        """A request handed to ``execute`` (``source`` identifies it to ``runtime``)."""
        request = cls.__new__(cls)
        request._model_name = ""
        request._model_version = -1
        request._tensors = None
        request._inputs = inputs
        request._requested = requested
        request._request_id = request_id
        request._correlation_id = correlation_id
        request._flags = flags
        request._timeout = timeout
        request._parameters = parameters
        request._preferred_memory = None
        request._trace = None
        request._source = source
        request._runtime = runtime
        request._sender = None
        request._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        return request

    # -- what a model reads ---------------------------------------------------------------

    def inputs(self) -> list[Tensor]:
        """The input tensors."""
        tensors = self._tensors
        if tensors is None:
            wrap = Tensor._wrap
            tensors = self._tensors = [wrap(n, a) for n, a in (self._inputs or {}).items()]
        return tensors

    def _input_tensor(self, name: str) -> Tensor | None:
        if self._tensors is None and self._inputs is not None:
            array = self._inputs.get(name)
            return None if array is None else Tensor._wrap(name, array)
        for tensor in self.inputs():
            if tensor._name == name:
                return tensor
        return None

    def _input_arrays(self) -> dict[str, npt.NDArray[Any]]:
        if self._inputs is not None:
            return self._inputs
        return {t._name: t._array for t in self._tensors or ()}

    def request_id(self) -> str:
        """The request's ID ("" when the client gave none)."""
        return self._request_id

    def correlation_id(self) -> int | str:
        """The sequence correlation ID (0 when none)."""
        return self._correlation_id

    def flags(self) -> int:
        """Sequence flags (``TRITONSERVER_REQUEST_FLAG_SEQUENCE_START`` / ``_END``)."""
        return self._flags

    def set_flags(self, flags: int) -> None:
        """Set the sequence flags (for a BLS request)."""
        self._flags = int(flags)

    def timeout(self) -> int:
        """The request's timeout in microseconds (0: none)."""
        return self._timeout

    def parameters(self) -> str:
        """The request parameters as JSON text, as Triton gives them."""
        parameters = self._parameters
        if isinstance(parameters, str):
            return parameters
        text = self._parameters = json.dumps(parameters or {})
        return text

    def _parameter_dict(self) -> dict[str, ParameterValue]:
        parameters = self._parameters
        if isinstance(parameters, str):
            loaded: dict[str, ParameterValue] = json.loads(parameters)
            return loaded
        return parameters or {}

    def requested_output_names(self) -> list[str]:
        """The outputs the client asked for (every output when it named none)."""
        return list(self._requested)

    def model_name(self) -> str:
        """The model a BLS request is for."""
        return self._model_name

    def trace(self) -> InferenceTrace:
        """The request's trace (pass it to a BLS request to trace the call as a child)."""
        if self._trace is not None:
            return self._trace
        return _NO_TRACE if self._source is None else InferenceTrace(self._source)

    # -- answering a received request -----------------------------------------------------

    def get_response_sender(self) -> InferenceResponseSender:
        """The response sender of this request (the same object on every call).

        :raises TritonModelException: for a request this model did not receive.
        """
        sender = self._sender
        if sender is None:
            if self._runtime is None:
                raise TritonModelException(
                    "get_response_sender() is only available on requests passed to execute()"
                )
            sender = self._sender = InferenceResponseSender(self._runtime.response_channel(self))
        return sender

    def is_cancelled(self) -> bool:
        """Whether the request was cancelled (client gone or timed out)."""
        if self._runtime is None:
            return False
        return self._runtime.is_cancelled(self)

    def set_release_flags(self, flags: int) -> None:
        """How the request is released when ``execute`` returns:
        ``TRITONSERVER_REQUEST_RELEASE_ALL`` (the default: it is done) or
        ``TRITONSERVER_REQUEST_RELEASE_RESCHEDULE`` (it goes back to the scheduler, to execute
        again in a later batch: ``sequence_batching { iterative_sequence: true }`` models).
        A non-decoupled model returns None for a rescheduled request; a decoupled one sets the
        flag before ``execute`` returns.

        :raises TritonModelException: for other flags, or on a request this model did not
            receive.
        """
        if flags not in (TRITONSERVER_REQUEST_RELEASE_ALL, TRITONSERVER_REQUEST_RELEASE_RESCHEDULE):
            raise TritonModelException(f"set_release_flags(): unknown release flags {flags}")
        if self._runtime is None:
            raise TritonModelException(
                "set_release_flags() is only available on requests passed to execute()"
            )
        self._release_flags = int(flags)

    def _rescheduled(self) -> bool:
        """Released with RESCHEDULE: the request goes on in a later ``execute``, so its
        response sender here is not abandoned when this wrapper goes away."""
        if self._release_flags != TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            return False
        if self._sender is not None:
            self._sender._finalizer.detach()
        return True

    # -- BLS --------------------------------------------------------------------------------

    def exec(self, decoupled: bool = False) -> Any:
        """Run this request on ``model_name`` and wait for the answer.

        Returns an :class:`InferenceResponse` (errors are in the response, never raised), or,
        with ``decoupled=True``, an iterator over the called model's responses.
        """
        return current_runtime().exec(self, bool(decoupled))

    def async_exec(self, decoupled: bool = False) -> Awaitable[Any]:
        """Like :meth:`exec`, from a coroutine: ``await request.async_exec()``."""
        return current_runtime().async_exec(self, bool(decoupled))

    def __repr__(self) -> str:
        names = (
            list(self._inputs)
            if self._inputs is not None
            else [t._name for t in self._tensors or ()]
        )
        return f"InferenceRequest(model_name={self._model_name!r}, inputs={names})"
