"""Triton's generate extension: ``POST v2/models/{name}[/versions/{v}]/generate`` and
``.../generate_stream`` (Server-Sent Events), mapped as tritonserver 2.51 maps them.

Request: a JSON object. Each top-level key names a model input (its value becomes the tensor:
a scalar or a flat array, shaped to the input's dims, batch dimension included) or else a
request parameter (string, number or boolean). The members of ``"parameters"`` follow the same
rule, so ``{"parameters": {"max_tokens": 8}}`` feeds an input ``max_tokens`` when the model has
one. Response: one JSON object per model response with ``model_name``, ``model_version``,
``id`` (when the request set one), the response parameters and every output by name (a single
element unwrapped from its array, BYTES as text), keys sorted as tritonserver sorts them.

``generate`` answers one JSON object and needs exactly one response from the model;
``generate_stream`` sends each response as an SSE ``data:`` event as the model sends it, the
status taken from the first one (an error there gives an error status, as tritonserver does),
an error after it an ``{"error": ...}`` event. A request refused before inference gets the usual
JSON error. Where tritonserver answers a client's mistake 500 (malformed JSON, wrong value
types) this answers 400 with the same words.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from kernel._errors import KernelError, Status, http_status
from kernel._inference import InferenceRequest, InferenceResponse, ParameterValue
from kernel._server import InferenceServer, InferenceTarget
from kernel.frontends._http_server._types import Reply, StreamingReply
from kernel.tensors import config_type_to_datatype, datatype_to_dtype

from ._infer import _json_data

__all__ = ["STREAM_UNREAD_RESPONSES", "generate", "generate_stream", "sse_event"]

STREAM_UNREAD_RESPONSES = 16
"""Model responses a stream holds for a slow client before a backend thread sending another
one waits (see :meth:`InferenceRequest.limit_unread_responses`)."""

_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_SSE_HEADERS = [_SSE, (b"cache-control", b"no-cache")]
_DUMPS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
_ONE_RESPONSE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that"
    " generates various number of responses"
)
_PARAMETER_TYPE = "has invalid type. It should be either 'int', 'bool', or 'string'."
_NESTED = "Converting keyword: 'parameters': "


def _invalid(text: str) -> KernelError:
    return KernelError(Status.INVALID_ARG, text)


def sse_event(data: bytes) -> bytes:
    """One Server-Sent Event carrying ``data`` (a JSON text: it holds no line break)."""
    return b"data: " + data + b"\n\n"


# -- request ------------------------------------------------------------------------------------


class _Inputs:
    """The model's inputs as generate sees them: datatype and shape (batch dim included)."""

    __slots__ = ("shapes",)

    def __init__(self, target: InferenceTarget) -> None:
        batch = [-1] if target.batched else []
        self.shapes: dict[str, tuple[str, list[int]]] = {
            spec.name: (
                config_type_to_datatype(spec.data_type.name or ""),
                batch + [int(d) for d in spec.dims],
            )
            for spec in target.config.input
        }


def _shape(name: str, dims: list[int], count: int) -> list[int]:
    """tritonserver's two passes: fixed dims divide the element count, the innermost dynamic
    dim takes what is left, other dynamic dims are 1."""
    problem = _invalid(f"The schema can not convert input '{name}' to tensor with proper shape")
    shape = list(dims)
    for d in reversed(shape):
        if d != -1:
            if d == 0 or count % d:
                raise problem
            count //= d
    for i in range(len(shape) - 1, -1, -1):
        if shape[i] == -1:
            shape[i] = count
            count = 1
    if count != 1:
        raise problem
    return shape


def _tensor(name: str, datatype: str, dims: list[int], value: object) -> npt.NDArray[Any]:
    items = value if isinstance(value, list) else [value]
    if any(isinstance(v, list | dict) for v in items):
        raise _invalid(f"The schema can not convert input '{name}' to tensor with proper shape")
    shape = _shape(name, dims, len(items))
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in items):
            raise _invalid(
                "Unable to parse JSON bytes array: attempt to access JSON non-string as string"
            )
        array = np.empty(len(items), dtype=np.object_)
        array[:] = [v.encode() for v in items if isinstance(v, str)]
        return array.reshape(shape)
    dtype = datatype_to_dtype(datatype)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in items):
            raise _invalid("Unable to parse 'data': attempt to access JSON non-boolean as boolean")
    elif dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            signed = "signed" if dtype.kind == "i" else "unsigned"
            raise _invalid(
                f"Unable to parse 'data': attempt to access JSON non-{signed}-integer as"
                f" {signed}-integer"
            )
        info = np.iinfo(dtype)
        if any(not info.min <= v <= info.max for v in items if isinstance(v, int)):
            raise _invalid(f"Unable to parse 'data': a value of input '{name}' is out of range")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        raise _invalid("Unable to parse 'data': attempt to access JSON non-number as double")
    return np.array(items, dtype=dtype).reshape(shape)


class _Request:
    """Collects the tensors and parameters of one generate request."""

    __slots__ = ("id", "inputs", "metadata", "parameters")

    def __init__(self, metadata: _Inputs) -> None:
        self.metadata = metadata
        self.inputs: dict[str, npt.NDArray[Any]] = {}
        self.parameters: dict[str, ParameterValue] = {}
        self.id = ""

    def add(self, key: str, value: object) -> None:
        """tritonserver's "exact mapping": an input's name makes a tensor, any other key a
        parameter."""
        known = self.metadata.shapes.get(key)
        if known is not None:
            if key in self.inputs:
                raise _invalid(
                    f"[request id: <id_unknown>] input '{key}' already exists in request"
                )
            self.inputs[key] = _tensor(key, known[0], known[1], value)
            return
        if not isinstance(value, str | int | float | bool):
            raise _invalid(f"parameter '{key}' {_PARAMETER_TYPE}")
        if key == "id" and isinstance(value, str):
            self.id = value
        self.parameters[key] = value


def decode_generate(
    server: InferenceServer, name: str, version: str, body: bytes | bytearray
) -> tuple[InferenceRequest, InferenceTarget]:
    """The request of one generate body, and where it goes.

    :raises KernelError: unknown model (``NOT_FOUND``), malformed body (``INVALID_ARG``, in
        tritonserver's words).
    """
    target = server.prepare(name, version)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid("attempt to get members for non-object")
    collected = _Request(_Inputs(target))
    for key, value in doc.items():
        if key != "parameters":
            collected.add(key, value)
            continue
        if not isinstance(value, dict):
            raise _invalid(
                "Expected JSON object for keyword: 'parameters': attempt to access JSON"
                " non-object as object"
            )
        for inner, item in value.items():
            try:
                collected.add(inner, item)
            except KernelError as exc:
                raise _invalid(_NESTED + exc.message) from None
    request = InferenceRequest(
        name,
        collected.inputs,
        model_version=target.version,
        id=collected.id,
        parameters=collected.parameters,
    )
    return request, target


# -- response -----------------------------------------------------------------------------------


def _response_doc(
    target: InferenceTarget, request: InferenceRequest, response: InferenceResponse
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    doc["model_name"] = target.name
    doc["model_version"] = str(target.version)
    doc.update(response.parameters)
    for output, array in response.outputs.items():
        data = _json_data(np.asarray(array))
        doc[output] = data[0] if len(data) == 1 else data
    return doc


def encode_generate(
    target: InferenceTarget, request: InferenceRequest, response: InferenceResponse
) -> bytes:
    """The JSON text of one response (its error's ``{"error": ...}`` if it failed)."""
    if response.error is not None:
        return orjson.dumps({"error": response.error.message})
    return orjson.dumps(_response_doc(target, request, response), option=_DUMPS)


def _is_flag_only(response: InferenceResponse) -> bool:
    """A decoupled model's bare final flag: nothing to send the client."""
    return response.error is None and not response.outputs and not response.parameters


async def generate(
    server: InferenceServer, request: InferenceRequest, target: InferenceTarget
) -> Reply:
    """``.../generate``: the model's one response as one JSON object.

    A decoupled model must send exactly one response (its bare final flag aside): a second one
    ends the request (cancelled) and the client gets tritonserver's message, with 400.
    """
    if not target.decoupled:
        response = await server.infer_once(request, target)
    else:
        chosen: InferenceResponse | None = None
        responses = server.infer(request, target)
        try:
            async for item in responses:
                if _is_flag_only(item):
                    continue
                if chosen is not None:
                    chosen = None
                    break
                chosen = item
                if item.final:
                    break
        finally:
            await responses.aclose()
        if chosen is None:
            raise KernelError(Status.INVALID_ARG, _ONE_RESPONSE)
        response = chosen
    body = encode_generate(target, request, response)
    status = 200 if response.error is None else http_status(response.error.status)
    return Reply(status, [_JSON], [body])


async def generate_stream(
    server: InferenceServer, request: InferenceRequest, target: InferenceTarget
) -> Reply | StreamingReply:
    """``.../generate_stream``: each response as an SSE event, sent as the model sends it.

    The first response is awaited before the status line, which it decides (200, or its
    error's status). The request waits unread responses past :data:`STREAM_UNREAD_RESPONSES`
    in the model (see :meth:`InferenceRequest.limit_unread_responses`), and a client gone
    ends the stream, which cancels the request.

    :raises KernelError: when the request is refused before inference (a JSON error reply).
    """
    request.limit_unread_responses(STREAM_UNREAD_RESPONSES)
    responses = server.infer(request, target)
    try:
        first = await anext(responses)
    except BaseException:
        await responses.aclose()
        raise
    status = 200 if first.error is None else http_status(first.error.status)
    return StreamingReply(status, list(_SSE_HEADERS), _Events(target, request, first, responses))


class _Events:
    """The SSE events of a stream's responses (an iterator, not a generator, so that
    ``aclose`` ends the request even when the transport closes it before the first event)."""

    __slots__ = ("_done", "_first", "_request", "_responses", "_target")

    def __init__(
        self,
        target: InferenceTarget,
        request: InferenceRequest,
        first: InferenceResponse,
        responses: AsyncGenerator[InferenceResponse, None],
    ) -> None:
        self._target = target
        self._request = request
        self._first: InferenceResponse | None = first
        self._responses = responses
        self._done = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> bytes:
        while True:
            response = self._first
            if response is not None:
                self._first = None
            elif self._done:
                raise StopAsyncIteration
            else:
                response = await anext(self._responses)
            if response.final:
                self._done = True
            if not _is_flag_only(response):
                return sse_event(encode_generate(self._target, self._request, response))

    async def aclose(self) -> None:
        """End the request's response stream (cancelling the request if it is not over)."""
        self._done = True
        self._first = None
        await self._responses.aclose()
