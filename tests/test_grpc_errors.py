"""Bad requests over gRPC get Triton's status and message, and the server keeps serving.

Every expected (status, message) pair below is what a real Triton 2.51 server answered to the
same request (same model shapes, Python backend), except where a comment says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from kernel_test_backends.configs import REPEAT, addsub
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kernel.testing import RunningServer, ServerThread, run_server, write_model

Request = service_pb2.ModelInferRequest
Message = Any  # protobuf messages are untyped

ADDSUB = addsub(16)


def _identity(config_type: str, dims: str, batch: int = 0, behaviour: str = "identity") -> str:
    return f"""
backend: "kerneltest"
max_batch_size: {batch}
input [ {{ name: "INPUT0" data_type: {config_type} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {config_type} dims: {dims} }} ]
parameters {{ key: "behaviour" value {{ string_value: "{behaviour}" }} }}
"""


MODELS = {
    "addsub": ADDSUB,
    "batched": _identity("TYPE_INT32", "[ 4 ]", batch=8),
    "dyn": _identity("TYPE_FP32", "[ -1, -1 ]"),
    "strings": _identity("TYPE_STRING", "[ -1 ]"),
    "raiser": _identity("TYPE_FP32", "[ -1 ]", behaviour="raise"),
    "repeat": REPEAT,
    "sleepy": _identity("TYPE_FP32", "[ -1 ]", behaviour="sleep")
    + 'parameters { key: "sleep_ms" value { string_value: "300" } }',
}
F16 = np.arange(16, dtype=np.float32).tobytes()
STRINGS = b"".join(len(s).to_bytes(4, "little") + s for s in (b"ab", b"", b"xyz"))
NO_ID = "[request id: <id_unknown>] "


def _addsub(*tensors: tuple[str, str, list[int]], raw: list[bytes], **fields: str) -> Message:
    request = Request(model_name="addsub", **fields)
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    return request


def _one(model: str, datatype: str, shape: list[int], raw: bytes) -> Message:
    request = Request(model_name=model)
    request.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


IN0 = ("INPUT0", "FP32", [16])
IN1 = ("INPUT1", "FP32", [16])


def _typed(field: str, values: list[float] | list[int], shape: list[int]) -> Message:
    request = Request(model_name="addsub")
    first = request.inputs.add(name="INPUT0", datatype="FP32", shape=shape)
    getattr(first.contents, field).extend(values)
    second = request.inputs.add(name="INPUT1", datatype="FP32", shape=[16])
    second.contents.fp32_contents.extend([1.0] * 16)
    return request


def _with_param(request: Message, key: str, kind: str, value: object) -> Message:
    setattr(request.parameters[key], kind, value)
    return request


def _with_output(request: Message, name: str) -> Message:
    request.outputs.add(name=name)
    return request


def _negative_classification() -> Message:
    request = _addsub(IN0, IN1, raw=[F16, F16])
    request.outputs.add(name="OUTPUT0").parameters["classification"].int64_param = -5
    return request


def _more_raw_than_inputs() -> Message:
    return _addsub(IN0, IN1, raw=[F16, F16, F16])


def _contents_and_raw() -> Message:
    request = _addsub(IN0, IN1, raw=[F16, F16])
    request.inputs[0].contents.fp32_contents.extend([1.0] * 16)
    return request


def _shm_without_size() -> Message:
    request = _addsub(IN0, IN1, raw=[F16])
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    return request


CASES: dict[str, tuple[Callable[[], Message], grpc.StatusCode, str]] = {
    "unknown model": (
        lambda: Request(model_name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Request for unknown model: 'nope' is not found",
    ),
    "unknown version": (
        lambda: _addsub(IN0, IN1, raw=[F16, F16], model_version="3"),
        grpc.StatusCode.NOT_FOUND,
        "Request for unknown model: 'addsub' version 3 is not found",
    ),
    "version not a number": (
        lambda: _addsub(IN0, IN1, raw=[F16, F16], model_version="x"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "failed to get model version from specified version string 'x' (details: stol),"
        " version should be an integral value > 0",
    ),
    "negative version": (
        lambda: _addsub(IN0, IN1, raw=[F16, F16], model_version="-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid model version specified '-1' , version should be an integral value > 0",
    ),
    "missing input": (
        lambda: _addsub(IN0, raw=[F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}expected 2 inputs but got 1 inputs for model 'addsub'. Got input(s)"
        " ['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all required"
        " input(s).",
    ),
    "extra input": (
        lambda: _addsub(IN0, IN1, ("INPUT2", "FP32", [16]), raw=[F16, F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}expected 2 inputs but got 3 inputs for model 'addsub'. Got input(s)"
        " ['INPUT2','INPUT1','INPUT0'], but missing required input(s) ]. Please provide all"
        " required input(s).",
    ),
    "unknown input name": (
        lambda: _addsub(IN0, ("INPUT2", "FP32", [16]), raw=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unexpected inference input 'INPUT2' for model 'addsub'",
    ),
    "duplicate input": (
        lambda: _addsub(IN0, IN0, raw=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}input 'INPUT0' already exists in request",
    ),
    "wrong datatype": (
        lambda: _addsub(("INPUT0", "INT32", [16]), IN1, raw=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}inference input 'INPUT0' data-type is 'INT32', but model 'addsub' expects 'FP32'",
    ),
    "invalid datatype": (
        lambda: _addsub(("INPUT0", "FLOAT", [16]), IN1, raw=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}inference input 'INPUT0' data-type is '<invalid>', but model 'addsub' expects"
        " 'FP32'",
    ),
    "wrong shape": (
        lambda: _addsub(("INPUT0", "FP32", [8]), IN1, raw=[F16[:32], F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}unexpected shape for input 'INPUT0' for model 'addsub'. Expected [16], got [8]. ",
    ),
    "wildcard dimension": (
        lambda: _addsub(("INPUT0", "FP32", [-1]), IN1, raw=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}All input dimensions should be specified for input 'INPUT0' for model 'addsub',"
        " got [-1]",
    ),
    "byte size mismatch": (
        lambda: _addsub(IN0, IN1, raw=[F16[:32], F16], id="bs"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "[request id: bs] input byte size mismatch for input 'INPUT0' for model 'addsub'."
        " Expected 64, got 32",
    ),
    # several problems at once: Triton names the datatype, shape and count before the size
    # Triton checks the inputs last to first
    "two wrong datatypes": (
        lambda: _addsub(("INPUT0", "INT32", [16]), ("INPUT1", "INT32", [16]), raw=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}inference input 'INPUT1' data-type is 'INT32', but model 'addsub' expects 'FP32'",
    ),
    "wrong datatype and byte size": (
        lambda: _addsub(("INPUT0", "INT32", [16]), IN1, raw=[F16[:8], F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}inference input 'INPUT0' data-type is 'INT32', but model 'addsub' expects 'FP32'",
    ),
    "wrong shape and byte size": (
        lambda: _addsub(("INPUT0", "FP32", [8]), IN1, raw=[F16[:8], F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}unexpected shape for input 'INPUT0' for model 'addsub'. Expected [16], got [8]. ",
    ),
    "byte size and missing input": (
        lambda: _addsub(IN0, raw=[F16[:8]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}expected 2 inputs but got 1 inputs for model 'addsub'. Got input(s)"
        " ['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all required"
        " input(s).",
    ),
    "fewer raw contents than inputs": (
        lambda: _addsub(IN0, IN1, raw=[F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unable to find data for input tensor 'INPUT1' for model 'addsub' in request.",
    ),
    "no data at all": (
        lambda: _addsub(IN0, IN1, raw=[]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unable to find data for input tensor 'INPUT0' for model 'addsub' in request.",
    ),
    "contents and raw contents": (
        _contents_and_raw,
        grpc.StatusCode.INVALID_ARGUMENT,
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for"
        " model 'addsub'",
    ),
    "typed contents of another type": (
        lambda: _typed("int_contents", list(range(16)), [16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unexpected explicit tensor data for input tensor 'INPUT0' for model 'addsub' of type"
        " 'INT32', expected datatype 'FP32'",
    ),
    "typed contents count": (
        lambda: _typed("fp32_contents", [1.0] * 15, [16]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}input byte size mismatch for input 'INPUT0' for model 'addsub'. Expected 64,"
        " got 60",
    ),
    # Triton's int64 count wraps and it reports "Expected 0"; the kernel gives the true size
    "element count overflow": (
        lambda: _one("dyn", "FP32", [2**62, 4], F16),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}input byte size mismatch for input 'INPUT0' for model 'dyn'. Expected"
        f" {2**62 * 4 * 4}, got 64",
    ),
    "batch too large": (
        lambda: _one("batched", "INT32", [9, 4], bytes(144)),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}inference request batch-size must be <= 8 for 'batched'",
    ),
    "no batch dimension": (
        lambda: _one("batched", "INT32", [4], bytes(16)),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}unexpected shape for input 'INPUT0' for model 'batched'. Expected [-1,4], got"
        " [4]. NOTE: Setting a non-zero max_batch_size in the model config requires a batch"
        " dimension to be prepended to each input shape. If you want to specify the full shape"
        " including the batch dim in your input dims config, try setting max_batch_size to"
        " zero. See the model configuration docs for more info on max_batch_size.",
    ),
    "scalar for a batching model": (
        lambda: _one("batched", "INT32", [], bytes(4)),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}input 'INPUT0' has no shape but model requires batch dimension for 'batched'",
    ),
    "unknown output": (
        lambda: _with_output(_addsub(IN0, IN1, raw=[F16, F16]), "OUTPUTX"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unexpected inference output 'OUTPUTX' for model 'addsub'",
    ),
    "fewer strings than the shape": (
        lambda: _one("strings", "BYTES", [4], STRINGS),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}expected 4 string elements for inference input 'INPUT0' for model 'strings',"
        " got 3",
    ),
    "more strings than the shape": (
        lambda: _one("strings", "BYTES", [2], STRINGS),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}unexpected number of string elements 3 for inference input 'INPUT0' for model"
        " 'strings', expecting 2",
    ),
    "truncated string": (
        lambda: _one("strings", "BYTES", [3], STRINGS[:-1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "incomplete string data for inference input 'INPUT0', expecting string of length 3 but"
        " only 2 bytes available",
    ),
    "truncated string length": (
        lambda: _one("strings", "BYTES", [3], STRINGS + b"\x01\x00"),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{NO_ID}incomplete string length indicator for inference input 'INPUT0' for model"
        " 'strings', expecting 4 bytes but only 2 bytes available. Please make sure the string"
        " length indicator is in one buffer.",
    ),
    "decoupled model on ModelInfer": (
        lambda: Request(model_name="repeat"),
        grpc.StatusCode.UNIMPLEMENTED,
        "ModelInfer RPC doesn't support models with decoupled transaction policy",
    ),
    "reserved parameter": (
        lambda: _with_param(_addsub(IN0, IN1, raw=[F16, F16]), "triton_x", "bool_param", True),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter keys starting with 'triton_' are reserved for Triton usage. Only the"
        " following keys starting with 'triton_' are allowed: triton_enable_empty_final_response",
    ),
    "uint64 parameter": (
        lambda: _with_param(_addsub(IN0, IN1, raw=[F16, F16]), "u", "uint64_param", 5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid value type for 'u' parameter, expected int64_param, bool_param, or string_param.",
    ),
    "sequence id of the wrong type": (
        lambda: _with_param(_addsub(IN0, IN1, raw=[F16, F16]), "sequence_id", "bool_param", True),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid value type for 'sequence_id' parameter, expected int64_param or string_param.",
    ),
    "priority of the wrong type": (
        lambda: _with_param(_addsub(IN0, IN1, raw=[F16, F16]), "priority", "string_param", "1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid value type for 'priority' parameter, expected int64_param or uint64_param.",
    ),
    # Triton 2.51 answers OK and ignores the extra raw contents; the kernel refuses them.
    "more raw contents than inputs": (
        _more_raw_than_inputs,
        grpc.StatusCode.INVALID_ARGUMENT,
        "3 raw_input_contents given for model 'addsub', but only 2 of its inputs take their data"
        " from raw_input_contents",
    ),
    # Was an unexpected ValueError answered UNKNOWN.
    "negative classification count": (
        _negative_classification,
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid value for 'classification' parameter for tensor 'OUTPUT0', expected a class"
        " count >= 0, got -5",
    ),
    "shared memory region without size": (
        _shm_without_size,
        grpc.StatusCode.INVALID_ARGUMENT,
        "'shared_memory_byte_size' must be specified along with 'shared_memory_region'"
        " parameter for tensor 'INPUT0'",
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("grpc_error_models")
    for name, config in MODELS.items():
        write_model(repo, name, config)
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(served: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(served.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _assert_serving(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(_addsub(IN0, IN1, raw=[F16, F16]), timeout=30)
    assert response.raw_output_contents[0] == (np.arange(16, dtype=np.float32) * 2).tobytes()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request(stub: service_pb2_grpc.GRPCInferenceServiceStub, case: str) -> None:
    build, code, message = CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(build(), timeout=30)
    assert (info.value.code(), info.value.details()) == (code, message)
    _assert_serving(stub)


def test_bad_request_inside_a_stream(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """On a stream the same refusals come back as ``error_message``; the stream goes on."""
    cases = [
        "missing input",
        "byte size mismatch",
        "unknown model",
        "decoupled model on ModelInfer",
    ]
    requests = [CASES[c][0]() for c in cases[:3]] + [_addsub(IN0, IN1, raw=[F16, F16], id="ok")]
    responses = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert len(responses) == 4
    errors = sorted(r.error_message for r in responses if r.error_message)
    assert errors == sorted(CASES[c][2] for c in cases[:3])
    ok = [r for r in responses if not r.error_message]
    assert ok[0].infer_response.id == "ok"
    assert ok[0].infer_response.parameters["triton_final_response"].bool_param


def test_model_failure(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(_one("raiser", "FP32", [2], bytes(8)), timeout=30)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "kerneltest: asked to raise" in (info.value.details() or "")
    _assert_serving(stub)


def test_message_over_the_size_limit(tmp_path: Path) -> None:
    write_model(tmp_path, "addsub", ADDSUB)
    with (
        ServerThread(
            tmp_path, http_port=None, metrics_port=None, grpc_max_message_bytes=1000
        ) as srv,
        grpc.insecure_channel(srv.grpc_url) as channel,
    ):
        small = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = _addsub(IN0, IN1, raw=[F16, F16])
        request.parameters["padding"].string_param = "x" * 1000
        with pytest.raises(grpc.RpcError) as info:
            small.ModelInfer(request, timeout=30)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        size = request.ByteSize()
        # gRPC's C core words it (Triton's server is built on the same core)
        assert info.value.details().endswith(f"Received message larger than max ({size} vs. 1000)")
        _assert_serving(small)


def test_client_errors_keep_the_connection(served: RunningServer) -> None:
    """The same tritonclient connection goes on working after refusals."""
    client = grpcclient.InferenceServerClient(served.grpc_url)
    try:
        tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
        tensor.set_data_from_numpy(np.zeros(16, dtype=np.float32))
        for _ in range(3):
            with pytest.raises(InferenceServerException) as info:
                client.infer("addsub", [tensor])
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert client.is_server_ready()
    finally:
        client.close()


async def test_stop_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    write_model(tmp_path, "sleepy", MODELS["sleepy"])
    async with run_server(tmp_path, http_port=None, metrics_port=None) as srv:
        client = aioclient.InferenceServerClient(srv.grpc_url)
        try:
            tensor = aioclient.InferInput("INPUT0", [2], "FP32")
            tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
            results: list[object] = []

            async def call() -> None:
                results.append(await client.infer("sleepy", [tensor]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                version = srv.server.route("sleepy")
                for _ in range(500):  # until the request reached the model
                    if version.in_flight:
                        break
                    await anyio.sleep(0.01)
                assert version.in_flight == 1
                srv.server.stop()
            assert len(results) == 1
        finally:
            await client.close()
