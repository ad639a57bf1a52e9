"""The inference route's wire format: KServe v2 JSON plus Triton's binary tensor extension.

A request body is a JSON header, optionally followed by the raw bytes of the inputs that set
``binary_data_size`` (in the order they are listed; ``Inference-Header-Content-Length`` says
where the JSON ends). Binary inputs become numpy arrays over slices of the body, without a copy.
A response is a JSON header followed by the raw bytes of the outputs sent in binary, written as
separate buffers, so output arrays are not copied either.

Error messages follow Triton's wording (clients and tests match on them); every error is a
:class:`~kernel._errors.KernelError`, translated to an HTTP status once, by the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import orjson

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest, InferenceResponse
from kernel._server import InferenceServer, InferenceTarget
from kernel._shared_memory import SystemSharedMemory
from kernel.frontends._classification import classify
from kernel.frontends._requests import Kind, ParamWording, RequestControls, json_kind
from kernel.tensors import (
    DATATYPES,
    array_from_bytes,
    array_to_bytes,
    config_type_to_datatype,
    datatype_of,
    datatype_to_dtype,
    element_count,
)

__all__ = ["DecodePlans", "InferCall", "decode_request", "encode_response"]

# How an output travels back.
JSON, BINARY, SHM = 0, 1, 2

_BF16 = np.dtype(ml_dtypes.bfloat16)
_NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY


def _invalid(text: str) -> KernelError:
    return KernelError(Status.INVALID_ARG, text)


@dataclass(slots=True)
class OutputSpec:
    """What the client asked for one output."""

    kind: int = JSON
    classes: int = 0
    region: str = ""
    offset: int = 0
    byte_size: int = 0


@dataclass(slots=True)
class InferCall:
    """A decoded inference request with what the response encoder needs to know."""

    request: InferenceRequest
    target: InferenceTarget
    default_kind: int = JSON
    outputs: dict[str, OutputSpec] = field(default_factory=dict)
    plan: _Plan | None = None
    """The plan the request was decoded from: it remembers the reply's JSON header too."""


# -- request ------------------------------------------------------------------------------------

_PENDING: npt.NDArray[Any] = np.empty(0)
"""Holds an input's place (the request's order) until its bytes are checked."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one JSON header says, for a request whose inputs all travel as binary data.

    Everything in it follows from the header's bytes alone, so a request with the same header
    (clients repeat theirs: same inputs, same shapes, no request id) skips the JSON and its
    checks; only the body's length and the arrays over it are new each time.
    """

    fields: dict[str, Any]
    default_kind: int
    spans: tuple[tuple[str, str, list[int], int, int], ...]
    """Inputs in the request's order: name, datatype, shape and where their bytes are."""
    end: int
    """The body length the header describes."""
    outputs: dict[str, OutputSpec]
    requested: tuple[str, ...]
    names: tuple[str, ...] = ()
    strings: bool = False
    """Some input is BYTES: its buffer is checked on every request."""
    arrays: tuple[tuple[str, np.dtype[Any], int, int, tuple[int, ...]], ...] = ()
    """Without BYTES inputs: name, dtype, element count, offset and shape of each input."""
    reply: list[Any] = field(default_factory=list)
    """The last reply header made for this plan's requests, when every output went back in
    binary, without classification, and of a fixed-size datatype: ``[model name, version,
    (name, dtype, shape, byte size) of each output, header bytes, whether every dtype is
    numpy's own in native byte order]``. The header follows from those alone (requests from a
    plan have no id), so a reply with the same outputs reuses it."""

    @classmethod
    def make(
        cls,
        fields: dict[str, Any],
        default_kind: int,
        spans: list[tuple[str, str, list[int], int, int]],
        end: int,
        outputs: dict[str, OutputSpec],
    ) -> _Plan:
        strings = any(span[1] == "BYTES" for span in spans)
        arrays = (
            ()
            if strings
            else tuple(
                (name, datatype_to_dtype(datatype), element_count(shape), start, tuple(shape))
                for name, datatype, shape, start, _ in spans
            )
        )
        names = tuple(span[0] for span in spans)
        return cls(
            fields, default_kind, tuple(spans), end, outputs, tuple(outputs), names, strings,
            arrays,
        )  # fmt: skip


class DecodePlans:
    """The :class:`_Plan` of recent request headers, for one REST app (bounded)."""

    __slots__ = ("_plans",)

    MAX_HEADER = 4096
    """Longer headers are decoded every time."""
    MAX_PLANS = 64

    def __init__(self) -> None:
        self._plans: dict[bytes, _Plan] = {}

    def get(self, key: bytes) -> _Plan | None:
        return self._plans.get(key)

    def add(self, key: bytes, plan: _Plan) -> None:
        plans = self._plans
        if len(plans) >= self.MAX_PLANS:
            del plans[next(iter(plans))]  # the oldest
        plans[key] = plan

    def __len__(self) -> int:
        return len(self._plans)


def decode_request(
    server: InferenceServer,
    model_name: str,
    version_str: str,
    body: memoryview,
    header_length: int | None,
    plans: DecodePlans | None = None,
) -> InferCall:
    """Build the :class:`InferCall` of one ``POST .../infer`` body.

    ``header_length`` is the ``Inference-Header-Content-Length`` value (already range-checked),
    ``None`` when absent (the whole body is JSON) and 0 for a raw binary request. With
    ``plans``, a header seen before is not parsed again (see :class:`_Plan`).

    :raises KernelError: with Triton's status and message for anything malformed.
    """
    target = server.prepare(model_name, version_str)
    if target.decoupled:
        raise KernelError(
            Status.UNSUPPORTED,
            "HTTP end point doesn't support models with decoupled transaction policy",
        )
    if header_length == 0:
        return _decode_raw(target, model_name, body)
    header = body if header_length is None else body[:header_length]
    key: bytes | None = None
    if plans is not None and header_length is not None and header_length <= plans.MAX_HEADER:
        key = bytes(header)
        plan = plans.get(key)
        if plan is not None and plan.end == len(body):
            return _planned(plan, target, model_name, body)
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid(
            "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"
        )
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise _invalid("Unable to parse 'id': attempt to access JSON non-string as string")
    fields: dict[str, Any] = _NO_FIELDS
    default_kind = JSON
    raw_params = doc.get("parameters")
    if raw_params is not None:
        if not isinstance(raw_params, dict):
            raise _invalid("failed to get request params.")
        controls = RequestControls()
        controls.read(
            ((key, json_kind(value), value) for key, value in raw_params.items()),
            _WORDING,
            _SWITCHES,
        )
        fields = controls.request_fields()
        if controls.switches.get(_BINARY_OUTPUT):
            default_kind = BINARY
    # a request id makes every header unique: not worth remembering
    spans: list[tuple[str, str, list[int], int, int]] | None = (
        [] if key is not None and not request_id else None
    )
    inputs = _decode_inputs(
        server.shared_memory,
        doc.get("inputs"),
        body,
        header_length,
        model_name,
        request_id or "<id_unknown>",
        spans,
    )
    outputs: dict[str, OutputSpec] = {}
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise _invalid("Unable to parse 'outputs': attempt to access JSON non-array as array")
        for item in raw_outputs:
            name, spec = _output_spec(item)
            outputs[name] = spec
    requested = tuple(outputs)
    request = InferenceRequest(
        model_name,
        inputs,
        model_version=target.version,
        id=request_id,
        requested_output_names=requested,
        **fields,
    )
    if spans is not None and key is not None and plans is not None and len(spans) == len(inputs):
        plans.add(key, _Plan.make(fields, default_kind, spans, len(body), outputs))
    return InferCall(request, target, default_kind, outputs)


def _planned(plan: _Plan, target: InferenceTarget, model_name: str, body: memoryview) -> InferCall:
    """:func:`decode_request` for a header with a plan: only the arrays over this body are new.

    Fixed-size inputs were checked when the plan was made (their byte sizes follow from the
    header); BYTES inputs are checked here as the full decoding checks them, last input first.
    """
    if plan.strings:
        arrays: list[npt.NDArray[Any]] = []
        for name, datatype, shape, start, stop in reversed(plan.spans):
            arrays.append(
                _from_buffer(datatype, shape, body[start:stop], name, model_name, "<id_unknown>")
            )
        inputs = dict(zip(plan.names, reversed(arrays), strict=True))
    else:
        # one array object over the body each (frombuffer + reshape makes two)
        inputs = {
            name: np.ndarray(shape, dtype, body, start)
            for name, dtype, count, start, shape in plan.arrays
        }
    request = InferenceRequest(
        model_name,
        inputs,
        model_version=target.version,
        requested_output_names=plan.requested,
        **plan.fields,
    )
    return InferCall(request, target, plan.default_kind, plan.outputs, plan)


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _dims(shape: list[Any]) -> bool:
    """Every dimension a JSON unsigned integer (orjson makes exact ``int``s; ``bool`` is not
    one)."""
    for d in shape:  # noqa: SIM110 - a loop: all() over a generator costs twice as much
        if type(d) is not int or d < 0:
            return False
    return True


_NO_PARAMS: dict[str, Any] = {}
_DATATYPES = frozenset(DATATYPES)


_NO_FIELDS: dict[str, Any] = {}
"""The request fields of a request without parameters: the defaults."""
_BINARY_OUTPUT = "binary_data_output"
_SWITCHES = (_BINARY_OUTPUT,)
_JSON_WORDS = {"bool": "boolean", "string": "string"}


def _wrong_json_kind(key: str, expected: tuple[Kind, ...]) -> KernelError:
    # Triton names the type its JSON reader was asked for: the last one it tried
    word = _JSON_WORDS.get(expected[-1], "unsigned-integer")
    return _invalid(f"Unable to parse '{key}': attempt to access JSON non-{word} as {word}")


_WORDING = ParamWording(
    wrong_kind=_wrong_json_kind,
    bad_custom=lambda key: _invalid(
        f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
    ),
    reserved=lambda: _invalid(
        "parameter keys starting with 'triton_' are reserved for Triton usage and should not"
        " be specified."
    ),
)


def _content_kind(item: dict[str, Any], params: dict[str, Any]) -> str:
    """Which of ``data`` / ``binary_data_size`` / ``shared_memory_region`` an input uses."""
    has = [
        key
        for key, present in (
            ("data", "data" in item),
            ("binary_data_size", "binary_data_size" in params),
            ("shared_memory_region", "shared_memory_region" in params),
        )
        if present
    ]
    if len(has) != 1:
        text = (
            "Input must set only one of the following fields: 'data', 'binary_data_size' in"
            " 'parameters', 'shared_memory_region' in 'parameters'. But"
        )
        text += " no field is set" if not has else " set " + " ".join(f"'{k}'" for k in has)
        raise _invalid(text)
    return has[0]


def _decode_inputs(
    shm: SystemSharedMemory,
    raw_inputs: object,
    body: memoryview,
    header_length: int | None,
    model_name: str,
    request_id: str,
    spans: list[tuple[str, str, list[int], int, int]] | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """The inputs; ``spans`` collects where the binary ones are (for a :class:`_Plan`)."""
    if not isinstance(raw_inputs, list):
        what = "non-existing object member 'inputs'" if raw_inputs is None else "JSON non-array"
        raise _invalid(f"Unable to parse 'inputs': attempt to access {what}")
    inputs: dict[str, npt.NDArray[Any]] = {}
    deferred: list[tuple[str, str, list[int], memoryview]] = []
    offset = header_length or 0
    end = len(body)
    for item in raw_inputs:
        if type(item) is not dict:
            raise _invalid("Unable to parse 'name': attempt to access JSON non-object as object")
        params = item.get("parameters") or _NO_PARAMS
        if type(params) is not dict:
            raise _invalid("Unable to parse 'parameters': attempt to access JSON non-object")
        # the usual request: binary data and nothing else (checked in full otherwise)
        if "binary_data_size" in params and "data" not in item and len(params) == 1:
            kind = "binary_data_size"
        else:
            kind = _content_kind(item, params)
        name = item.get("name")
        if not isinstance(name, str):
            raise _invalid("Unable to parse 'name': attempt to access JSON non-string as string")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise _invalid(
                "Unable to parse 'datatype': attempt to access JSON non-string as string"
            )
        shape = item.get("shape")
        if not isinstance(shape, list):
            raise _invalid("Unable to parse 'shape': attempt to access JSON non-array as array")
        if not _dims(shape):
            raise _invalid(
                "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as"
                " unsigned-integer"
            )
        if name in inputs:
            raise _invalid(f"[request id: {request_id}] input '{name}' already exists in request")
        if datatype not in _DATATYPES:
            raise _invalid(f"invalid datatype for input {name}")
        if kind == "binary_data_size":
            size = params["binary_data_size"]
            if type(size) is not int or size < 0:
                raise _invalid(
                    "Unable to parse 'binary_data_size': attempt to access JSON"
                    " non-unsigned-integer as unsigned-integer"
                )
            if header_length is None and size:
                raise _invalid(
                    "must specify valid 'Infer-Header-Content-Length' in request header and"
                    " 'binary_data_size' when passing inputs in binary data format"
                )
            if offset + size > end:
                raise _invalid(
                    f"unexpected size for input '{name}', expecting {offset + size - end}"
                    f" additional bytes for model '{model_name}'"
                )
            deferred.append((name, datatype, shape, body[offset : offset + size]))
            if spans is not None:
                spans.append((name, datatype, shape, offset, offset + size))
            offset += size
            inputs[name] = _PENDING
        elif kind == "shared_memory_region":
            region = params["shared_memory_region"]
            if not isinstance(region, str):
                raise _invalid(
                    "Unable to parse 'shared_memory_region': attempt to access JSON non-string"
                    " as string"
                )
            shm_offset = params.get("shared_memory_offset", 0)
            shm_size = params.get("shared_memory_byte_size", 0)
            if not (_uint(shm_offset) and _uint(shm_size)):
                raise _invalid(
                    "Unable to parse 'shared_memory_offset' or 'shared_memory_byte_size':"
                    " attempt to access JSON non-unsigned-integer as unsigned-integer"
                )
            deferred.append((name, datatype, shape, shm.view(region, shm_offset, shm_size)))
            inputs[name] = _PENDING
        else:
            inputs[name] = _from_json(datatype, shape, item["data"], name, model_name, request_id)
    if offset != end and header_length is not None:
        raise _invalid(f"unexpected additional input data for model '{model_name}'")
    # Triton checks the byte sizes in its core, after parsing, walking the inputs backwards:
    # with several bad inputs, the message names the one Triton names.
    for name, datatype, shape, view in reversed(deferred):
        inputs[name] = _from_buffer(datatype, shape, view, name, model_name, request_id)
    return inputs


def _from_buffer(
    datatype: str,
    shape: list[int],
    view: memoryview,
    name: str,
    model_name: str,
    request_id: str,
) -> npt.NDArray[Any]:
    """An array over ``view`` (no copy), with Triton's messages for a size that disagrees."""
    count = element_count(shape)
    if datatype == "BYTES":
        try:
            return array_from_bytes(datatype, shape, view)
        except KernelError:
            raise _invalid(_bytes_problem(view, count, name, model_name, request_id)) from None
    dtype = datatype_to_dtype(datatype)
    expected = count * dtype.itemsize
    if view.nbytes != expected:
        raise _invalid(
            f"[request id: {request_id}] input byte size mismatch for input '{name}' for model"
            f" '{model_name}'. Expected {expected}, got {view.nbytes}"
        )
    # what array_from_bytes does, its checks done above
    return np.frombuffer(view, dtype=dtype, count=count).reshape(shape)


def _bytes_problem(
    view: memoryview, count: int, name: str, model_name: str, request_id: str
) -> str:
    """Triton's message for a BYTES buffer that does not hold ``count`` length-prefixed items.

    Only called on the error path, after the decoder refused the buffer.
    """
    data = view.cast("B") if view.format != "B" else view
    offset, end, items = 0, len(data), 0
    while offset < end:
        if end - offset < 4:
            return (
                f"[request id: {request_id}] incomplete string length indicator for inference"
                f" input '{name}' for model '{model_name}', expecting 4 bytes but only"
                f" {end - offset} bytes available. Please make sure the string length indicator"
                " is in one buffer."
            )
        length = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if end - offset < length:
            return (
                f"incomplete string data for inference input '{name}', expecting string of"
                f" length {length} but only {end - offset} bytes available"
            )
        offset += length
        items += 1
    if items > count:
        return (
            f"[request id: {request_id}] unexpected number of string elements {items} for"
            f" inference input '{name}' for model '{model_name}', expecting {count}"
        )
    return (
        f"[request id: {request_id}] expected {count} string elements for inference input"
        f" '{name}' for model '{model_name}', got {items}"
    )


def _flatten(data: object, out: list[object]) -> None:
    """Append the leaves of nested lists to ``out``, row-major.

    Iterative: the JSON parser allows nesting deeper than Python's recursion limit.
    """
    if not isinstance(data, list):
        out.append(data)
        return
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()


def _from_json(
    datatype: str,
    shape: list[int],
    data: object,
    name: str,
    model_name: str,
    request_id: str,
) -> npt.NDArray[Any]:
    """An array from a JSON ``data`` field: nested or flat lists, row-major."""
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_from_json(shape, count, data, name, model_name, request_id)
    # numpy reads regular nesting in C; ragged nesting (legal here) is flattened first
    try:
        values = np.array(data)
    except ValueError:
        values = np.empty(0, dtype=np.object_)
    if values.dtype == np.object_:
        flat: list[object] = []
        _flatten(data, flat)
        try:
            values = np.array(flat)
        except ValueError:
            values = np.array(flat, dtype=np.object_)
    if values.size != count:
        raise _invalid("Unable to parse 'data': Shape does not match true shape of 'data' field")
    kind = values.dtype.kind
    if datatype == "BOOL":
        if kind != "b" and count:
            raise _invalid("Unable to parse 'data': attempt to access JSON non-boolean as boolean")
    elif kind not in "biuf" and count:
        raise _invalid("Unable to parse 'data': attempt to access JSON non-number as number")
    try:
        return values.astype(datatype_to_dtype(datatype)).reshape(shape)
    except (OverflowError, ValueError, TypeError) as exc:
        raise _invalid(f"Unable to parse 'data': {exc}") from None


def _bytes_from_json(
    shape: list[int],
    count: int,
    data: object,
    name: str,
    model_name: str,
    request_id: str,
) -> npt.NDArray[Any]:
    flat: list[object] = []
    _flatten(data, flat)
    if not all(isinstance(v, str) for v in flat):
        raise _invalid("Unable to parse 'data': attempt to access JSON non-string as string")
    if len(flat) != count:
        items = len(flat)
        if items > count:
            text = (
                f"unexpected number of string elements {items} for inference input '{name}'"
                f" for model '{model_name}', expecting {count}"
            )
        else:
            text = (
                f"expected {count} string elements for inference input '{name}' for model"
                f" '{model_name}', got {items}"
            )
        raise _invalid(f"[request id: {request_id}] {text}")
    array = np.empty(count, dtype=np.object_)
    array[:] = [v.encode() for v in flat if isinstance(v, str)]
    return array.reshape(shape)


_JSON_SPEC = OutputSpec(JSON)
_BINARY_SPEC = OutputSpec(BINARY)
"""The specs of outputs that ask for nothing but their encoding (shared: specs are read-only
once decoded)."""


def _output_spec(item: object) -> tuple[str, OutputSpec]:
    if not isinstance(item, dict):
        raise _invalid("Unable to parse 'name': attempt to access JSON non-object as object")
    name = item.get("name")
    if not isinstance(name, str):
        raise _invalid("Unable to parse 'name': attempt to access JSON non-string as string")
    params = item.get("parameters") or _NO_PARAMS
    if not isinstance(params, dict):
        raise _invalid("Unable to parse 'parameters': attempt to access JSON non-object")
    if len(params) <= 1:  # the usual output: at most binary_data
        binary = params.get("binary_data", False)
        if binary is True:
            return name, _BINARY_SPEC
        if binary is False and (not params or "binary_data" in params):
            return name, _JSON_SPEC
    spec = OutputSpec()
    binary = params.get("binary_data", False)
    if not isinstance(binary, bool):
        raise _invalid("Unable to parse 'binary_data': attempt to access JSON non-boolean")
    classes = params.get("classification", 0)
    if not _uint(classes):
        raise _invalid(
            "Unable to set 'classification': attempt to access JSON non-unsigned-integer as"
            " unsigned-integer"
        )
    if "shared_memory_region" in params:
        if "classification" in params:
            raise _invalid("Output can't set both 'shared_memory_region' and 'classification'")
        if binary:
            raise _invalid("Output can't set both 'shared_memory_region' and 'binary_data'")
        region = params["shared_memory_region"]
        offset = params.get("shared_memory_offset", 0)
        size = params.get("shared_memory_byte_size", 0)
        if not (isinstance(region, str) and _uint(offset) and _uint(size)):
            raise _invalid(
                "Unable to parse 'shared_memory_region', 'shared_memory_offset' or"
                " 'shared_memory_byte_size'"
            )
        spec.kind, spec.region, spec.offset, spec.byte_size = SHM, region, offset, size
    else:
        spec.kind = BINARY if binary else JSON
        spec.classes = classes
    return name, spec


def _decode_raw(target: InferenceTarget, model_name: str, body: memoryview) -> InferCall:
    """A raw binary request: the whole body is the data of the model's only input."""
    config = target.config
    if len(config.input) != 1:
        raise _invalid(
            "[request id: <id_unknown>] Raw request must only have 1 input (found 1) to be"
            f" deduced but got {len(config.input)} inputs in '{model_name}' model configuration"
        )
    spec = config.input[0]
    datatype = config_type_to_datatype(spec.data_type.name or "")
    shape = ([1] if config.max_batch_size > 0 else []) + list(spec.dims)
    wildcards = [i for i, d in enumerate(shape) if d == -1]
    if len(wildcards) > 1:
        raise _invalid(
            f"The shape of the raw input '{spec.name}' can not be deduced because there are more"
            " than one variable-sized dimension"
        )
    fixed = element_count([d for d in shape if d != -1])
    if datatype == "BYTES":
        if wildcards or fixed != 1:
            raise _invalid(
                f"For BYTE datatype raw input '{spec.name}', the model must have input shape [1]"
            )
        array = np.empty(1, dtype=np.object_)
        array[0] = bytes(body)
        value = array.reshape(shape)
    else:
        itemsize = datatype_to_dtype(datatype).itemsize
        if wildcards:
            unit = fixed * itemsize
            if unit == 0 or len(body) % unit:
                raise _invalid(
                    f"The shape of the raw input '{spec.name}' can not be deduced because the"
                    f" byte size ({len(body)}) is not a multiple of the element byte size"
                    f" ({unit})"
                )
            shape[wildcards[0]] = len(body) // unit
        value = _from_buffer(datatype, shape, body, spec.name, model_name, "<id_unknown>")
    request = InferenceRequest(model_name, {spec.name: value}, model_version=target.version)
    return InferCall(request, target, BINARY)


# -- response -----------------------------------------------------------------------------------


def _json_data(array: npt.NDArray[Any]) -> Any:
    """The ``data`` list of an output sent in JSON (row-major, flat)."""
    flat = array.reshape(-1)
    if flat.dtype.kind in "OSU":
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()
        ]
    if flat.dtype == _BF16:
        flat = flat.astype(np.float32)
    elif flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return np.ascontiguousarray(flat)


_SMALL_COPY = 2048
"""Output buffers up to this size are copied for a template reply (a view costs more)."""


def encode_response(
    call: InferCall,
    response: InferenceResponse,
    shm: SystemSharedMemory,
) -> tuple[bytes, list[bytes | memoryview]]:
    """The response's JSON header and the binary buffers that follow it (maybe none).

    :raises KernelError: the response's error, or a problem writing an output.
    """
    if response.error is not None:
        raise response.error
    plan = call.plan
    if plan is not None and plan.reply and not response.parameters:
        model, version, signature, template, plain = plan.reply
        arrays = response.outputs
        if (
            call.request.model_name == model
            and call.request.model_version == version
            and len(arrays) == len(signature)
        ):
            views: list[bytes | memoryview] = []
            index = 0
            # one loop: compare each output with the template's and take its bytes
            for key, array in arrays.items():
                expected, dtype, shape, size = signature[index]
                index += 1
                if key != expected or array.shape != shape:
                    break
                if array.dtype is not dtype and array.dtype != dtype:
                    break
                if not size:
                    continue
                if plain:
                    # numpy's own dtype in native order: a few bytes are copied (cheaper than
                    # a view), more taken as they are when C-ordered (what array_to_bytes makes)
                    if size <= _SMALL_COPY:
                        views.append(array.tobytes())
                        continue
                    try:
                        views.append(array.data.cast("B"))
                        continue
                    except TypeError:  # not C-contiguous
                        pass
                views.append(array_to_bytes(array))
            else:
                return template, views
    # the full encoding; only a plan keeps a template
    templatable = plan is not None
    request = call.request
    specs = call.outputs
    default = _BINARY_SPEC if call.default_kind == BINARY else _JSON_SPEC
    target = call.target
    outputs: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, array in response.outputs.items():
        spec = specs.get(name, default)
        if spec.classes:
            array = classify(array, spec.classes, target.batched, target.labels(name), name)
        try:
            datatype = datatype_of(array)
        except KernelError as exc:
            raise KernelError(Status.INTERNAL, f"output '{name}': {exc.message}") from None
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if templatable and (spec.kind != BINARY or spec.classes or datatype == "BYTES"):
            templatable = False
        if spec.kind == BINARY:
            data = array_to_bytes(array)
            size = memoryview(data).nbytes
            entry["parameters"] = {"binary_data_size": size}
            if size:
                buffers.append(data)
        elif spec.kind == JSON:
            entry["data"] = _json_data(array)
        else:
            data = array_to_bytes(array)
            size = memoryview(data).nbytes
            if size > spec.byte_size:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"shared memory size specified with the request for output '{name}'"
                    f" ({spec.byte_size} bytes) should be at least {size} bytes to hold the"
                    " results",
                )
            # Triton lists a shared-memory output with its name, datatype and shape only.
            shm.view(spec.region, spec.offset, size)[:] = memoryview(data).cast("B")
        outputs.append(entry)
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    doc["model_name"] = request.model_name
    doc["model_version"] = str(request.model_version)
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_NUMPY_JSON)
    if templatable and plan is not None and not response.parameters:
        output_arrays = response.outputs
        signature = tuple([(n, a.dtype, a.shape, a.nbytes) for n, a in output_arrays.items()])
        plain = all(a.dtype.isbuiltin == 1 for a in output_arrays.values())
        plan.reply[:] = [request.model_name, request.model_version, signature, header, plain]
    return header, buffers
