"""``ModelInferRequest`` to :class:`InferenceRequest`, and responses back to ``ModelInferResponse``.

This is the inference hot path, so it reads the (upb) message directly: tensor bytes become
numpy arrays over the message's own ``bytes`` (no copy), typed ``*_contents`` fields are read
with numpy, and nothing is built that the request does not need.

Checks and their messages follow Triton 2.51 (clients match on the wording). Triton checks a
request in two phases: the frontend first (where each input's data is, its request parameters),
then the core (requested outputs, input count, names, datatypes, shapes, and last the data size).
Problems with an input's data are therefore held back until the model's validator has looked at
the rest of the request, so a request with several problems is refused for the one Triton names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest, InferenceResponse, ParameterValue
from kernel._server import InferenceServer, InferenceTarget
from kernel.frontends._classification import classify
from kernel.frontends._grpc._messages import InferResponsePb
from kernel.frontends._grpc._response_wire import ResponseWire
from kernel.frontends._requests import EMPTY_FINAL, Kind, ParamWording, RequestControls
from kernel.tensors import (
    DATATYPES,
    array_from_bytes,
    array_to_bytes,
    datatype_of,
    datatype_to_dtype,
    deserialize_bytes_tensor,
)

__all__ = ["FINAL_FLAG", "DecodedRequest", "OutputTarget", "TensorCodec"]

FINAL_FLAG = "triton_final_response"

# The typed contents fields in Triton's order of checking, with the datatype each one carries.
_CONTENT_FIELDS: tuple[tuple[str, str, np.dtype[Any]], ...] = (
    ("bool_contents", "BOOL", np.dtype(np.bool_)),
    ("int_contents", "INT32", np.dtype(np.int32)),
    ("int64_contents", "INT64", np.dtype(np.int64)),
    ("uint_contents", "UINT32", np.dtype(np.uint32)),
    ("uint64_contents", "UINT64", np.dtype(np.uint64)),
    ("fp32_contents", "FP32", np.dtype(np.float32)),
    ("fp64_contents", "FP64", np.dtype(np.float64)),
    ("bytes_contents", "BYTES", np.dtype(np.object_)),
)
_FIELD_OF_DATATYPE = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INT64_MAX = 2**63 - 1


def _invalid(text: str) -> KernelError:
    return KernelError(Status.INVALID_ARG, text)


def _param_type(key: str, expected: str, tensor: str = "") -> KernelError:
    where = f" for tensor '{tensor}'" if tensor else ""
    return _invalid(f"invalid value type for '{key}' parameter{where}, expected {expected}.")


@dataclass(slots=True)
class OutputTarget:
    """What a requested output asked for besides its data: a shared memory region or top-k."""

    name: str
    region: str = ""
    view: memoryview | None = None
    classification: int = 0


@dataclass(slots=True)
class DecodedRequest:
    """A decoded request and what encoding its responses needs."""

    request: InferenceRequest
    target: InferenceTarget
    outputs: dict[str, OutputTarget] | None
    empty_final: bool


_PARAM_KINDS: dict[str | None, Kind] = {
    "bool_param": "bool",
    "int64_param": "int",
    "uint64_param": "uint",
    "double_param": "double",
    "string_param": "string",
}
_PARAM_NAMES = {"bool": "bool_param", "int": "int64_param", "uint": "uint64_param"}


def _param_items(parameters: Any) -> Iterator[tuple[str, Kind, Any]]:
    """A ``map<string, InferParameter>`` as ``(key, kind, value)`` items."""
    for key, param in parameters.items():
        choice = param.WhichOneof("parameter_choice")
        kind = _PARAM_KINDS.get(choice, "other")
        yield key, kind, getattr(param, choice) if choice else None


def _wrong_param_kind(key: str, expected: tuple[Kind, ...]) -> KernelError:
    names = " or ".join(_PARAM_NAMES.get(kind, "string_param") for kind in expected)
    return _param_type(key, names)


_NO_FIELDS: dict[str, Any] = {}
"""The request fields of a request without parameters: the defaults."""

_WORDING = ParamWording(
    wrong_kind=_wrong_param_kind,
    bad_custom=lambda key: _param_type(key, "int64_param, bool_param, or string_param"),
    reserved=lambda: _invalid(
        "parameter keys starting with 'triton_' are reserved for Triton usage."
        f" Only the following keys starting with 'triton_' are allowed: {EMPTY_FINAL}"
    ),
)


def _shared_memory_params(parameters: Any, tensor: str) -> tuple[str, int, int] | None:
    """The (region, offset, byte size) a tensor's parameters name, or None for none."""
    if "shared_memory_region" not in parameters:
        return None
    region = parameters["shared_memory_region"]
    if region.WhichOneof("parameter_choice") != "string_param":
        raise _param_type("shared_memory_region", "string_param", tensor)
    if "shared_memory_byte_size" not in parameters:
        raise _invalid(
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region'"
            f" parameter for tensor '{tensor}'"
        )
    size = parameters["shared_memory_byte_size"]
    if size.WhichOneof("parameter_choice") != "int64_param":
        raise _param_type("shared_memory_byte_size", "int64_param", tensor)
    offset = 0
    if "shared_memory_offset" in parameters:
        param = parameters["shared_memory_offset"]
        if param.WhichOneof("parameter_choice") != "int64_param":
            raise _param_type("shared_memory_offset", "int64_param", tensor)
        offset = param.int64_param
    return region.string_param, offset, size.int64_param


def set_parameters(target: Any, parameters: dict[str, ParameterValue]) -> None:
    """Write response parameters into a protobuf ``map<string, InferParameter>``."""
    for key, value in parameters.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


_PLANS = 256
"""Request plans kept per server; past it the cache starts over (one per request shape)."""


_SHARED_MEMORY_KEYS = frozenset(
    ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")
)

Region = tuple[str, int, int]
"""A shared memory range: (region name, offset, byte size)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a request decoded to apart from its id and data, for requests that differ from it
    in nothing else: each input is in raw contents or in a registered shared memory range,
    with a fixed-size datatype; outputs may name shared memory ranges and classification."""

    model: str
    version: str  # as requested
    inputs: tuple[tuple[str, tuple[int, ...], np.dtype[Any], int, Region | None], ...]
    """name, shape, dtype, bytes, and the shared memory range it is read from (None: raw)."""
    requested: tuple[str, ...]
    fields: dict[str, Any] | None  # the request fields its parameters set, but "parameters"
    parameters: tuple[tuple[str, ParameterValue], ...]
    empty_final: bool
    outputs: tuple[tuple[str, Region | None, int], ...] | None
    """The outputs' targets: name, shared memory range, classification (None: no targets)."""


def _plan_of(message: Any, decoded: DecodedRequest) -> _Plan | None:
    """The plan of a request that decoded without error, or ``None`` when it has anything a
    plan does not hold (typed contents, BYTES, input parameters besides shared memory)."""
    request = decoded.request
    raw = message.raw_input_contents
    inputs = []
    raw_count = 0
    for tensor in message.inputs:
        if tensor.HasField("contents") or tensor.datatype == "BYTES":
            return None
        region: Region | None = None
        if tensor.parameters:
            if not _SHARED_MEMORY_KEYS.issuperset(tensor.parameters.keys()):
                return None
            region = _shared_memory_params(tensor.parameters, tensor.name)
        array = request.inputs[tensor.name]
        if region is None:
            if raw_count >= len(raw) or array.nbytes != len(raw[raw_count]):
                return None
            raw_count += 1
        elif array.nbytes != region[2]:
            return None
        inputs.append((tensor.name, array.shape, array.dtype, array.nbytes, region))
    if raw_count != len(raw) or len(inputs) != len(request.inputs):
        return None
    outputs: tuple[tuple[str, Region | None, int], ...] | None = None
    if decoded.outputs is not None:
        outputs = tuple(
            (
                target.name,
                None if target.view is None else _output_region(message, target.name),
                target.classification,
            )
            for target in decoded.outputs.values()
        )
    fields: dict[str, Any] | None = None
    if message.parameters:
        fields = {
            "correlation_id": request.correlation_id,
            "flags": request.flags,
            "priority": request.priority,
            "timeout_us": request.timeout_us,
        }
    return _Plan(
        request.model_name,
        message.model_version,
        tuple(inputs),
        request.requested_output_names,
        fields,
        tuple(request.parameters.items()),
        decoded.empty_final,
        outputs,
    )


def _output_region(message: Any, name: str) -> Region | None:
    for output in message.outputs:
        if output.name == name:
            return _shared_memory_params(output.parameters, name)
    return None


class TensorCodec:
    """Decodes requests and encodes responses for one server."""

    def __init__(self, server: InferenceServer) -> None:
        self._server = server
        self._wire = ResponseWire()
        self._plans: dict[bytes, _Plan] = {}

    # -- requests ---------------------------------------------------------------------------

    def decode(self, message: Any, *, unary: bool) -> DecodedRequest:
        """Build the :class:`InferenceRequest` of a ``ModelInferRequest``.

        A request read by :class:`._messages.InferRequestReader` carries a ``shape_key``:
        when a request with the same key decoded before, every input in raw contents, its
        plan (:class:`_Plan`) builds the request from the new data without reading the
        message again.

        :raises KernelError: with Triton's status and message for a request it refuses.
        """
        key = getattr(message, "shape_key", None)
        if key is not None:
            plan = self._plans.get(key)
            if plan is not None:
                decoded = self._planned(plan, message, unary)
                if decoded is not None:
                    return decoded
        decoded = self._decode(message, unary)
        if key is not None:
            plan = _plan_of(message, decoded)
            if plan is not None:
                if len(self._plans) >= _PLANS:
                    self._plans.clear()
                self._plans[key] = plan
        return decoded

    def _planned(self, plan: _Plan, message: Any, unary: bool) -> DecodedRequest | None:
        """The request of ``plan`` with ``message``'s data (``None`` when the data does not
        fit, or a shared memory range is gone: the full decode words the error)."""
        raw = message.raw_input_contents
        raw_index = 0
        inputs: dict[str, npt.NDArray[Any]] = {}
        memory = self._server.shared_memory
        try:
            for name, shape, dtype, size, region in plan.inputs:
                if region is None:
                    if raw_index >= len(raw):
                        return None
                    data = raw[raw_index]
                    raw_index += 1
                    if len(data) != size:
                        return None
                else:
                    data = memory.view(*region)
                inputs[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
            targets: dict[str, OutputTarget] | None = None
            if plan.outputs is not None:
                targets = {
                    name: OutputTarget(
                        name,
                        "" if region is None else region[0],
                        None if region is None else memory.view(*region),
                        classification,
                    )
                    for name, region, classification in plan.outputs
                }
        except KernelError:
            return None
        if raw_index != len(raw):
            return None
        version = self._server.prepare(plan.model, plan.version)
        if unary and version.decoupled:
            raise KernelError(
                Status.UNSUPPORTED,
                "ModelInfer RPC doesn't support models with decoupled transaction policy",
            )
        fields = plan.fields
        request = InferenceRequest(
            plan.model,
            inputs,
            model_version=version.version,
            id=message.id,
            requested_output_names=plan.requested,
            **(_NO_FIELDS if fields is None else {**fields, "parameters": dict(plan.parameters)}),
        )
        return DecodedRequest(request, version, targets, plan.empty_final)

    def _decode(self, message: Any, unary: bool) -> DecodedRequest:
        server = self._server
        model = message.model_name
        version = server.prepare(model, message.model_version)
        if unary and version.decoupled:
            raise KernelError(
                Status.UNSUPPORTED,
                "ModelInfer RPC doesn't support models with decoupled transaction policy",
            )
        request_id = message.id
        fields = _NO_FIELDS
        empty_final = False
        if message.parameters:
            controls = RequestControls()
            controls.read(_param_items(message.parameters), _WORDING)
            fields, empty_final = controls.request_fields(), controls.empty_final

        inputs: dict[str, npt.NDArray[Any]] = {}
        deferred: KernelError | None = None
        unplaceable = False
        raw = message.raw_input_contents
        raw_count = len(raw)
        raw_index = 0
        for tensor in message.inputs:
            name = tensor.name
            if name in inputs:
                raise _invalid(
                    f"[request id: {request_id or '<id_unknown>'}] input '{name}' already"
                    " exists in request"
                )
            datatype = tensor.datatype
            shape = tuple(tensor.shape)
            data: Any = None
            array: npt.NDArray[Any] | None = None
            shm = _shared_memory_params(tensor.parameters, name) if tensor.parameters else None
            if shm is not None:
                if tensor.HasField("contents"):
                    raise _invalid(
                        "unexpected 'content' provided when using shared memory for input"
                        f" tensor '{name}' for model '{model}'"
                    )
                data = server.shared_memory.view(*shm)
            elif tensor.HasField("contents"):
                if raw_count:
                    raise _invalid(
                        "contents field must not be specified when using raw_input_contents"
                        f" for '{name}' for model '{model}'"
                    )
                array = self._typed_contents(tensor, datatype, model)
            elif raw_index < raw_count:
                # tritonclient sends raw contents only for inputs not in shared memory
                data = raw[raw_index]
                raw_index += 1
            else:
                raise _invalid(
                    f"unable to find data for input tensor '{name}' for model '{model}' in request."
                )
            try:
                if array is not None:
                    inputs[name] = _reshape_typed(array, shape)
                elif datatype == "BYTES":
                    inputs[name] = self._bytes_array(data, shape, name, model, request_id)
                else:
                    inputs[name] = array_from_bytes(datatype, shape, data)
            except KernelError as exc:
                if deferred is None:
                    deferred = self._data_error(
                        exc, version, request_id, name, datatype, shape, data, array
                    )
                placeholder = _placeholder(datatype, shape)
                if placeholder is None:
                    unplaceable = True
                else:
                    inputs[name] = placeholder

        if raw_index < raw_count:
            raise _invalid(
                f"{raw_count} raw_input_contents given for model '{model}', but only"
                f" {raw_index} of its inputs take their data from raw_input_contents"
            )

        requested: list[str] = []
        targets: dict[str, OutputTarget] | None = None
        for output in message.outputs:
            name = output.name
            requested.append(name)
            if output.parameters:
                target = self._output_target(output, name)
                if target is not None:
                    if targets is None:
                        targets = {}
                    targets[name] = target

        request = InferenceRequest(
            model,
            inputs,
            model_version=version.version,
            id=request_id,
            requested_output_names=requested,
            **fields,
        )
        if deferred is not None:
            if not unplaceable:
                # the model's checks come first in Triton; they raise if they find anything
                version.validator.validate(request)
            raise deferred
        return DecodedRequest(request, version, targets, empty_final)

    def _output_target(self, output: Any, name: str) -> OutputTarget | None:
        parameters = output.parameters
        target: OutputTarget | None = None
        shm = _shared_memory_params(parameters, name)
        if shm is not None:
            target = OutputTarget(name, shm[0], self._server.shared_memory.view(*shm))
        if "classification" in parameters:
            param = parameters["classification"]
            if param.WhichOneof("parameter_choice") != "int64_param":
                raise _param_type("classification", "int64_param", name)
            if param.int64_param < 0:
                raise _invalid(
                    f"invalid value for 'classification' parameter for tensor '{name}',"
                    f" expected a class count >= 0, got {param.int64_param}"
                )
            target = target or OutputTarget(name)
            target.classification = param.int64_param
        return target

    @staticmethod
    def _typed_contents(tensor: Any, datatype: str, model: str) -> npt.NDArray[Any]:
        """The flat array of an input's typed ``contents`` (numpy reads the repeated field)."""
        contents = tensor.contents
        wanted = _FIELD_OF_DATATYPE.get(datatype)
        dtype = datatype_to_dtype(datatype) if datatype in DATATYPES else np.dtype(np.uint8)
        found: Any = None
        found_dtype = dtype
        for content_field, field_type, field_dtype in _CONTENT_FIELDS:
            values = getattr(contents, content_field)
            if not len(values):
                continue
            if content_field != wanted:
                raise _invalid(
                    f"unexpected explicit tensor data for input tensor '{tensor.name}' for"
                    f" model '{model}' of type '{field_type}', expected datatype '{datatype}'"
                )
            found, found_dtype = values, field_dtype
        if found is None:
            return np.empty(0, dtype=found_dtype)
        if datatype == "BYTES":
            items = np.empty(len(found), dtype=np.object_)
            items[:] = list(found)
            return items
        array = np.fromiter(found, dtype=found_dtype, count=len(found))
        # INT8/INT16/UINT8/UINT16 travel widened, as in Triton; narrow them like C would
        return array.astype(dtype, copy=False)

    @staticmethod
    def _bytes_array(
        data: Any, shape: tuple[int, ...], name: str, model: str, rid: str
    ) -> npt.NDArray[Any]:
        items = deserialize_bytes_tensor(data, input_name=name, model_name=model, request_id=rid)
        count = math.prod(shape)
        if min(shape, default=0) < 0 or len(items) != count:
            raise KernelError(Status.INVALID_ARG, "BYTES element count mismatch")
        array = np.empty(count, dtype=np.object_)
        array[:] = items
        return array.reshape(shape)

    def _data_error(
        self,
        exc: KernelError,
        version: InferenceTarget,
        rid: str,
        name: str,
        datatype: str,
        shape: tuple[int, ...],
        data: Any,
        typed: npt.NDArray[Any] | None,
    ) -> KernelError:
        """Triton's message for an input whose data does not fit its datatype and shape."""
        model = version.name
        prefix = f"[request id: {rid or '<id_unknown>'}] "
        if datatype not in DATATYPES:
            spec = version.validator.inputs.get(name)
            if spec is None:
                return _invalid(f"unexpected inference input '{name}' for model '{model}'")
            return _invalid(
                f"{prefix}inference input '{name}' data-type is '<invalid>', but model"
                f" '{model}' expects '{spec.datatype}'"
            )
        if min(shape, default=0) < 0:
            return _invalid(
                f"{prefix}All input dimensions should be specified for input '{name}' for"
                f" model '{model}', got [{','.join(str(d) for d in shape)}]"
            )
        count = math.prod(shape)
        if datatype == "BYTES":
            if exc.message.startswith(("incomplete", "[request id")):
                return exc  # a truncated buffer, already in Triton's words
            got = len(typed) if typed is not None else len(deserialize_bytes_tensor(data))
            if got < count:
                return _invalid(
                    f"{prefix}expected {count} string elements for inference input '{name}'"
                    f" for model '{model}', got {got}"
                )
            return _invalid(
                f"{prefix}unexpected number of string elements {got} for inference input"
                f" '{name}' for model '{model}', expecting {count}"
            )
        itemsize = datatype_to_dtype(datatype).itemsize
        size = typed.size * itemsize if typed is not None else memoryview(data).nbytes
        return _invalid(
            f"{prefix}input byte size mismatch for input '{name}' for model '{model}'."
            f" Expected {count * itemsize}, got {size}"
        )

    # -- responses --------------------------------------------------------------------------

    def encode_framed(self, decoded: DecodedRequest, response: InferenceResponse) -> bytes | None:
        """A unary response as gRPC-framed ``ModelInferResponse`` bytes, written directly
        (:mod:`._response_wire`), or ``None`` when it needs :meth:`encode` (response
        parameters, outputs into shared memory or classified)."""
        if response.parameters or decoded.outputs is not None:
            return None
        request = decoded.request
        outputs: list[tuple[str, str, tuple[int, ...], Any, int]] = []
        for name, array in response.outputs.items():
            datatype = datatype_of(array)
            dtype = array.dtype
            if dtype.kind in "OSU" or dtype.byteorder == ">" or not array.flags.c_contiguous:
                data = array_to_bytes(array)  # serialized, little-endian or contiguous
                size = len(data) if isinstance(data, bytes) else data.nbytes
                outputs.append((name, datatype, array.shape, data, size))
            else:  # its memory is the wire bytes: joined straight from the array
                outputs.append((name, datatype, array.shape, array, array.nbytes))
        return self._wire.framed(
            request.model_name, str(request.model_version), request.id, outputs
        )

    def encode(
        self,
        decoded: DecodedRequest,
        response: InferenceResponse,
        final: bool | None = None,
        *,
        into: Any = None,
    ) -> Any:
        """The ``ModelInferResponse`` of ``response`` (written into ``into`` when given, e.g. a
        stream response's field, which saves a copy); ``final`` (when not None) is written as
        the ``triton_final_response`` parameter, as Triton does on streams.

        :raises KernelError: ``INVALID_ARG`` when an output does not fit its shared memory region.
        """
        request = decoded.request
        message = InferResponsePb() if into is None else into
        message.model_name = request.model_name
        message.model_version = str(request.model_version)
        message.id = request.id
        if response.parameters:
            set_parameters(message.parameters, response.parameters)
        if final is not None:
            message.parameters[FINAL_FLAG].bool_param = final
        targets = decoded.outputs
        outputs = message.outputs
        raw = message.raw_output_contents
        for name, array in response.outputs.items():
            target = targets.get(name) if targets is not None else None
            if target is not None and target.classification:
                model = decoded.target
                array = classify(
                    array, target.classification, model.batched, model.labels(name), name
                )
            outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            data = array_to_bytes(array)
            if target is not None and target.view is not None:
                size = len(data) if isinstance(data, bytes) else data.nbytes
                if size > len(target.view):
                    raise KernelError(
                        Status.INVALID_ARG,
                        "shared memory size specified with the request for output"
                        f" '{name}' ({len(target.view)} bytes) should be at least {size} bytes"
                        " to hold the results",
                    )
                target.view[:size] = data
                raw.append(b"")  # keeps raw_output_contents aligned with outputs
            else:
                raw.append(data if isinstance(data, bytes) else data.tobytes())
        return message


def _reshape_typed(array: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    if min(shape, default=0) >= 0 and array.size == math.prod(shape):
        return array.reshape(shape)
    raise _invalid("typed contents do not match the shape")  # reworded by _data_error


def _placeholder(datatype: str, shape: tuple[int, ...]) -> npt.NDArray[Any] | None:
    """An array of the right datatype and shape holding no memory (for the model's checks)."""
    if datatype not in DATATYPES or min(shape, default=0) < 0:
        return None
    try:
        return np.broadcast_to(np.zeros((), dtype=datatype_to_dtype(datatype)), shape)
    except ValueError:  # more elements than numpy can index
        return None
