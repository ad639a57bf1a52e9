"""The gRPC frontend against the real ``tritonclient`` (sync and asyncio) on loopback ports.

One server (``kerneltest`` models) serves most tests; tests that need other server options
(explicit model control, a small message limit) start their own. Expected values that describe
Triton's behaviour (parameter names, final-response flags, extension names) were checked against
a real Triton 2.51 server.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode
from kernel._inference import RequestFlags
from kernel._proto.grpc.health.v1 import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthCheckResponseServingStatus,
)
from kernel.frontends._grpc._messages import InferRequestPb
from kernel.frontends._grpc._tensors import TensorCodec
from kernel.testing import RunningServer, ServerThread, run_server, write_model


def _config(behaviour: str, inputs: str, outputs: str, extra: str = "", batch: int = 0) -> str:
    return f"""
backend: "kerneltest"
max_batch_size: {batch}
input [ {inputs} ]
output [ {outputs} ]
parameters {{ key: "behaviour" value {{ string_value: "{behaviour}" }} }}
{extra}
"""


def _tensor(name: str, config_type: str, dims: str) -> str:
    return f'{{ name: "{name}" data_type: {config_type} dims: {dims} }}'


def _identity(config_type: str, dims: str = "[ -1 ]", batch: int = 0) -> str:
    return _config(
        "identity", _tensor("INPUT0", config_type, dims), _tensor("OUTPUT0", config_type, dims),
        batch=batch,
    )  # fmt: skip


ADDSUB = _config(
    "addsub",
    _tensor("INPUT0", "TYPE_FP32", "[ 16 ]") + ", " + _tensor("INPUT1", "TYPE_FP32", "[ 16 ]"),
    _tensor("OUTPUT0", "TYPE_FP32", "[ 16 ]") + ", " + _tensor("OUTPUT1", "TYPE_FP32", "[ 16 ]"),
)
REPEAT = _config(
    "repeat",
    _tensor("IN", "TYPE_INT32", "[ -1 ]"),
    _tensor("OUT", "TYPE_INT32", "[ 1 ]"),
    "model_transaction_policy { decoupled: true }",
)
SLOW_REPEAT = REPEAT + 'parameters { key: "sleep_ms" value { string_value: "5" } }'
DATATYPES = {
    "FP32": ("TYPE_FP32", np.float32),
    "INT32": ("TYPE_INT32", np.int32),
    "INT8": ("TYPE_INT8", np.int8),
    "BOOL": ("TYPE_BOOL", np.bool_),
    "FP16": ("TYPE_FP16", np.float16),
    "BF16": ("TYPE_BF16", ml_dtypes.bfloat16),
    "BYTES": ("TYPE_STRING", np.object_),
}
MODELS = {
    "addsub": ADDSUB,
    "repeat": REPEAT,
    "slow_repeat": SLOW_REPEAT,
    "batched": _identity("TYPE_INT32", "[ 4 ]", batch=8),
    "dyn": _identity("TYPE_FP32", "[ -1, -1 ]"),
    "stats": _identity("TYPE_FP32"),
    "raiser": _config(
        "raise", _tensor("INPUT0", "TYPE_FP32", "[ -1 ]"), _tensor("OUTPUT0", "TYPE_FP32", "[ -1 ]")
    ),
    **{
        f"identity_{dt.lower()}": _identity(config_type)
        for dt, (config_type, _) in DATATYPES.items()
    },
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("grpc_models")
    for name, config in MODELS.items():
        write_model(repo, name, config)
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        yield srv


@pytest.fixture
def client(served: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(served.grpc_url)
    yield c
    c.close()


@pytest.fixture
def stub(served: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """A raw stub, for requests tritonclient would not build."""
    channel = grpc.insecure_channel(served.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _addsub_inputs(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> list[grpcclient.InferInput]:
    inputs = [
        grpcclient.InferInput("INPUT0", [16], "FP32"),
        grpcclient.InferInput("INPUT1", [16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def _sample(datatype: str) -> npt.NDArray[Any]:
    if datatype == "BYTES":
        return np.array([b"a", b"", b"\x00\xffxyz", "snow\u2603".encode()], dtype=np.object_)
    if datatype == "BOOL":
        return np.array([True, False, True, True])
    return np.array([1.5, -2.0, 0.25, 100.0]).astype(DATATYPES[datatype][1])


A = np.arange(16, dtype=np.float32)
B = np.full(16, 0.5, dtype=np.float32)


# -- health, metadata, configuration ------------------------------------------------------


def test_health_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("addsub")
    assert client.is_model_ready("addsub", "1")
    assert not client.is_model_ready("addsub", "2")
    assert not client.is_model_ready("nope")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "triton"
    assert metadata["version"] == "0.1.0"
    assert metadata["extensions"] == [
        "classification",
        "sequence",
        "model_repository",
        "model_configuration",
        "system_shared_memory",
        "binary_tensor_data",
        "parameters",
        "statistics",
        "trace",
        "logging",
    ]


def test_model_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("addsub", as_json=True)
    assert metadata["name"] == "addsub"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "kerneltest"
    assert metadata["inputs"] == [
        {"name": "INPUT0", "datatype": "FP32", "shape": ["16"]},
        {"name": "INPUT1", "datatype": "FP32", "shape": ["16"]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    batched = client.get_model_metadata("batched", "1", as_json=True)
    assert batched["inputs"][0]["shape"] == ["-1", "4"]
    assert batched["versions"] == ["1"]
    config = client.get_model_config("repeat", as_json=True)["config"]
    assert config["name"] == "repeat"
    assert config["backend"] == "kerneltest"
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert config["input"][0]["data_type"] == "TYPE_INT32"


@pytest.mark.parametrize("call", ["get_model_metadata", "get_model_config"])
def test_metadata_of_unknown_models(client: grpcclient.InferenceServerClient, call: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        getattr(client, call)("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert info.value.message() == "Request for unknown model: 'nope' is not found"
    with pytest.raises(InferenceServerException) as info:
        getattr(client, call)("addsub", "7")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert info.value.message() == "Request for unknown model: 'addsub' version 7 is not found"


def test_health_service(served: RunningServer) -> None:
    """``grpc.health.v1.Health/Check`` with a plain grpcio channel (no grpc_health package)."""
    with grpc.insecure_channel(served.grpc_url) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=bytes,
            response_deserializer=HealthCheckResponse.parse,
        )
        for service in ("", "inference.GRPCInferenceService"):
            response = check(HealthCheckRequest(service=service), timeout=10)
            assert response.status == HealthCheckResponseServingStatus.SERVING


# -- inference ----------------------------------------------------------------------------


def test_infer_addsub(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("addsub", _addsub_inputs(A, B), request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("addsub", "1", "req-7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", "FP32", [16]),
        ("OUTPUT1", "FP32", [16]),
    ]
    assert len(response.raw_output_contents) == 2


def test_infer_returns_only_requested_outputs(client: grpcclient.InferenceServerClient) -> None:
    outputs = [grpcclient.InferRequestedOutput("OUTPUT1")]
    result = client.infer("addsub", _addsub_inputs(A, B), model_version="1", outputs=outputs)
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    assert len(response.raw_output_contents) == 1
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    assert result.as_numpy("OUTPUT0") is None


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_infer_datatypes_raw(client: grpcclient.InferenceServerClient, datatype: str) -> None:
    data = _sample(datatype)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{datatype.lower()}", [tensor])
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    assert result.get_output("OUTPUT0").datatype == datatype
    assert out.shape == data.shape
    if datatype == "BYTES":
        assert list(out) == list(data)
    else:
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("FP32", "fp32_contents", [1.5, -2.0, 3.25]),
        ("INT32", "int_contents", [1, -2, 2**31 - 1]),
        ("INT8", "int_contents", [1, -2, 127]),
        ("BOOL", "bool_contents", [True, False, True]),
        ("BYTES", "bytes_contents", [b"x", b"", b"yz"]),
    ],
)
def test_infer_typed_contents(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str, field: str, values: list[Any]
) -> None:
    request = service_pb2.ModelInferRequest(model_name=f"identity_{datatype.lower()}")
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, field).extend(values)
    response = stub.ModelInfer(request, timeout=30)
    assert response.outputs[0].datatype == datatype
    # Triton answers with raw contents whatever the request used
    result = grpcclient.InferResult(response)
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    assert list(out) == values


def test_infer_more_raw_contents_than_inputs_is_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    """Triton 2.51 ignores raw contents past the last input (and answers OK); the kernel
    refuses the request: the client's inputs and data disagree."""
    request = service_pb2.ModelInferRequest(model_name="identity_fp32")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
    request.raw_input_contents.extend([A.tobytes(), B.tobytes()])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "2 raw_input_contents given for model 'identity_fp32', but only 1 of its inputs take"
        " their data from raw_input_contents"
    )


def test_parameters_round_trip(client: grpcclient.InferenceServerClient) -> None:
    """Request parameters reach the model; the identity model answers with them."""
    tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.ones(2, dtype=np.float32))
    sent = {"text": "hello", "count": -3, "flag": True, "ratio": 0.25}
    result = client.infer("identity_fp32", [tensor], parameters=sent)
    got = result.get_response().parameters
    assert got["text"].string_param == "hello"
    assert got["count"].int64_param == -3
    assert got["flag"].bool_param is True
    assert got["ratio"].double_param == 0.25
    assert set(got) == set(sent)


def test_sequence_priority_and_timeout_are_accepted(
    client: grpcclient.InferenceServerClient,
) -> None:
    inputs = _addsub_inputs(A, B)
    for sequence_id in (42, "session-a"):
        result = client.infer(
            "addsub",
            inputs,
            sequence_id=sequence_id,
            sequence_start=True,
            sequence_end=True,
            priority=2,
            timeout=5_000_000,
        )
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


async def test_request_fields_decoded(tmp_path: Path) -> None:
    """What the wire fields become in the InferenceRequest (no sockets: the codec alone)."""
    write_model(tmp_path, "addsub", ADDSUB)
    async with run_server(tmp_path, http_port=None, grpc_port=None, metrics_port=None) as srv:
        message = service_pb2.ModelInferRequest(model_name="addsub", model_version="1", id="r1")
        for name in ("INPUT0", "INPUT1"):
            message.inputs.add(name=name, datatype="FP32", shape=[16])
            message.raw_input_contents.append(A.tobytes())
        message.outputs.add(name="OUTPUT1")
        message.parameters["sequence_id"].string_param = "corr"
        message.parameters["sequence_start"].bool_param = True
        message.parameters["sequence_end"].bool_param = False
        message.parameters["priority"].uint64_param = 3
        message.parameters["timeout"].int64_param = 1500
        message.parameters["triton_enable_empty_final_response"].bool_param = True
        message.parameters["custom"].int64_param = 9
        decoded = TensorCodec(srv.server).decode(
            InferRequestPb.FromString(message.SerializeToString()), unary=True
        )
        request = decoded.request
        assert (request.model_name, request.model_version, request.id) == ("addsub", 1, "r1")
        assert request.correlation_id == "corr"
        assert request.flags is RequestFlags.SEQUENCE_START
        assert (request.priority, request.timeout_us) == (3, 1500)
        assert request.parameters == {"custom": 9}
        assert request.requested_output_names == ("OUTPUT1",)
        assert decoded.empty_final
        np.testing.assert_array_equal(request.inputs["INPUT0"], A)
        assert not request.inputs["INPUT0"].flags.writeable  # a view of the message's bytes


def test_classification(client: grpcclient.InferenceServerClient) -> None:
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=3)]
    result = client.infer("addsub", _addsub_inputs(A, A), outputs=outputs)
    assert result.get_output("OUTPUT0").datatype == "BYTES"
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    assert list(out) == [b"30.000000:15", b"28.000000:14", b"26.000000:13"]


# -- streaming ----------------------------------------------------------------------------


def _stream_results(
    client: grpcclient.InferenceServerClient, count: int, results: queue.Queue[Any]
) -> list[tuple[Any, Any]]:
    return [results.get(timeout=30) for _ in range(count)]


def _final_flag(result: Any) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def test_stream_decoupled(client: grpcclient.InferenceServerClient) -> None:
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        values = np.array([5, 6, 7], dtype=np.int32)
        tensor = grpcclient.InferInput("IN", [3], "INT32")
        tensor.set_data_from_numpy(values)
        client.async_stream_infer("repeat", [tensor], request_id="plain")
        got = _stream_results(client, 3, results)
        assert all(error is None for _, error in got)
        assert [int(r.as_numpy("OUT")[0]) for r, _ in got] == [5, 6, 7]
        assert [_final_flag(r) for r, _ in got] == [False, False, False]
        assert {r.get_response().id for r, _ in got} == {"plain"}

        # the final flag travels as an empty response only when asked for
        client.async_stream_infer(
            "repeat", [tensor], request_id="empty-final", enable_empty_final_response=True
        )
        got = _stream_results(client, 4, results)
        assert [_final_flag(r) for r, _ in got] == [False, False, False, True]
        last = got[-1][0].get_response()
        assert (last.id, last.model_name, len(last.outputs)) == ("empty-final", "repeat", 0)

        # no responses at all: nothing is sent, unless the empty final was asked for
        nothing = grpcclient.InferInput("IN", [0], "INT32")
        nothing.set_data_from_numpy(np.zeros(0, dtype=np.int32))
        client.async_stream_infer("repeat", [nothing], request_id="silent")
        client.async_stream_infer(
            "repeat", [nothing], request_id="only-final", enable_empty_final_response=True
        )
        ((result, error),) = _stream_results(client, 1, results)
        assert error is None
        assert (result.get_response().id, _final_flag(result)) == ("only-final", True)
        assert results.empty()
    finally:
        client.stop_stream()


def test_stream_non_decoupled_and_errors(client: grpcclient.InferenceServerClient) -> None:
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("addsub", _addsub_inputs(A, B), request_id="one")
        client.async_stream_infer("nope", _addsub_inputs(A, B), request_id="two")
        client.async_stream_infer(
            "addsub", _addsub_inputs(A, B), request_id="three", enable_empty_final_response=True
        )
        got = _stream_results(client, 3, results)
        by_id: dict[str, Any] = {}
        for result, error in got:
            if error is not None:
                assert error.message() == "Request for unknown model: 'nope' is not found"
                by_id["two"] = None
            else:
                by_id[result.get_response().id] = result
        assert set(by_id) == {"one", "two", "three"}
        for rid in ("one", "three"):
            assert _final_flag(by_id[rid])
            np.testing.assert_array_equal(by_id[rid].as_numpy("OUTPUT0"), A + B)
    finally:
        client.stop_stream()
    assert results.empty()


def test_stream_cancelled_by_the_client(
    served: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    """A stream closed with requests in flight cancels them; the server carries on."""
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    tensor = grpcclient.InferInput("IN", [400], "INT32")  # 5 ms apart: 2 s in all
    tensor.set_data_from_numpy(np.arange(400, dtype=np.int32))
    client.async_stream_infer("slow_repeat", [tensor], request_id="long")
    results.get(timeout=30)  # the request is running
    version = served.server.route("slow_repeat")
    assert version.in_flight == 1
    client.stop_stream(cancel_requests=True)
    for _ in range(500):  # bounded: until the cancelled request left the model
        if not version.in_flight:
            break
        threading.Event().wait(0.01)
    assert version.in_flight == 0
    assert client.is_server_ready()
    np.testing.assert_array_equal(
        client.infer("addsub", _addsub_inputs(A, B)).as_numpy("OUTPUT0"), A + B
    )


async def test_asyncio_client(served: RunningServer) -> None:
    client = aioclient.InferenceServerClient(served.grpc_url)
    try:
        assert await client.is_server_live()
        assert await client.is_model_ready("addsub")
        metadata = await client.get_model_metadata("repeat", as_json=True)
        assert metadata["inputs"][0]["name"] == "IN"
        inputs = [
            aioclient.InferInput("INPUT0", [16], "FP32"),
            aioclient.InferInput("INPUT1", [16], "FP32"),
        ]
        inputs[0].set_data_from_numpy(A)
        inputs[1].set_data_from_numpy(B)
        result = await client.infer("addsub", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)

        tensor = aioclient.InferInput("IN", [2], "INT32")
        tensor.set_data_from_numpy(np.array([1, 2], dtype=np.int32))

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": "repeat", "inputs": [tensor], "request_id": "a"}
            yield {"model_name": "nope", "inputs": [tensor], "request_id": "b"}
            yield {"model_name": "repeat", "inputs": [tensor], "request_id": "c"}

        # the server ends the stream once the client is done sending and every request is
        # answered, so this loop ends by itself (the client cannot ask for empty finals)
        seen: list[tuple[str, bool]] = []
        errors: list[str] = []
        async for stream_result, error in client.stream_infer(requests()):
            if error is not None:
                errors.append(error.message())
                continue
            response = stream_result.get_response()
            seen.append((response.id, response.parameters["triton_final_response"].bool_param))
        assert sorted(seen) == [("a", False), ("a", False), ("c", False), ("c", False)]
        assert errors == ["Request for unknown model: 'nope' is not found"]
    finally:
        await client.close()


# -- shared memory ------------------------------------------------------------------------


def test_system_shared_memory(client: grpcclient.InferenceServerClient) -> None:
    key_in, key_out = f"/kernel_grpc_in_{os.getpid()}", f"/kernel_grpc_out_{os.getpid()}"
    region_in = shm.create_shared_memory_region("grpc_in", key_in, 128)
    region_out = shm.create_shared_memory_region("grpc_out", key_out, 64)
    try:
        shm.set_shared_memory_region(region_in, [A, B])
        client.register_system_shared_memory("grpc_in", key_in, 128)
        client.register_system_shared_memory("grpc_out", key_out, 64)
        status = client.get_system_shared_memory_status(as_json=True)["regions"]
        assert status["grpc_in"] == {"name": "grpc_in", "key": key_in, "byte_size": "128"}
        inputs = [
            grpcclient.InferInput("INPUT0", [16], "FP32"),
            grpcclient.InferInput("INPUT1", [16], "FP32"),
        ]
        inputs[0].set_shared_memory("grpc_in", 64)
        inputs[1].set_shared_memory("grpc_in", 64, offset=64)
        outputs = [
            grpcclient.InferRequestedOutput("OUTPUT0"),
            grpcclient.InferRequestedOutput("OUTPUT1"),
        ]
        outputs[0].set_shared_memory("grpc_out", 64)
        result = client.infer("addsub", inputs, outputs=outputs)
        np.testing.assert_array_equal(
            shm.get_contents_as_numpy(region_out, np.float32, [16]), A + B
        )
        # raw contents stay aligned with the outputs: an empty entry for the one in shared memory
        assert result.get_response().raw_output_contents[0] == b""
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)

        # an input mixing shared memory and raw contents takes the first raw entry
        mixed = _addsub_inputs(A, B)
        mixed[0].set_shared_memory("grpc_in", 64, offset=64)
        result = client.infer("addsub", mixed)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), B + B)

        with pytest.raises(InferenceServerException) as info:
            client.get_system_shared_memory_status("nope")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert info.value.message() == "Unable to find system shared memory region: 'nope'"
    finally:
        client.unregister_system_shared_memory("grpc_in")
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(region_in)
        shm.destroy_shared_memory_region(region_out)
    assert client.get_system_shared_memory_status(as_json=True) == {}


def test_cuda_shared_memory_without_gpu(client: grpcclient.InferenceServerClient) -> None:
    assert client.get_cuda_shared_memory_status(as_json=True) == {}
    with pytest.raises(InferenceServerException) as info:
        client.get_cuda_shared_memory_status("region")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.register_cuda_shared_memory("c", base64.b64encode(b"handle"), 0, 64)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "CUDA shared memory is not supported: no GPU" in info.value.message()
    client.unregister_cuda_shared_memory()


# -- statistics, settings -----------------------------------------------------------------


def test_model_statistics(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("INPUT0", [3], "FP32")
    tensor.set_data_from_numpy(np.ones(3, dtype=np.float32))
    for _ in range(3):
        client.infer("stats", [tensor])
    stats = client.get_inference_statistics("stats", as_json=True)["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert (entry["name"], entry["version"]) == ("stats", "1")
    assert (entry["inference_count"], entry["execution_count"]) == ("3", "3")
    assert int(entry["last_inference"]) > 0
    inference = entry["inference_stats"]
    assert inference["success"]["count"] == "3"
    assert inference["compute_infer"]["count"] == "3"
    assert set(inference) >= {"fail", "queue", "compute_input", "compute_output", "cache_hit"}
    assert entry["batch_stats"][0]["batch_size"] == "1"
    assert entry["batch_stats"][0]["compute_infer"]["count"] == "3"
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in everything} >= {"stats", "addsub"}
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nope")
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == "requested model 'nope' is not available"
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("stats", "4")
    assert info.value.message() == "requested model version is not available for model 'stats'"


def test_trace_settings_are_kept_and_echoed(client: grpcclient.InferenceServerClient) -> None:
    settings = client.get_trace_settings(as_json=True)["settings"]
    assert settings["trace_rate"] == {"value": ["1000"]}
    assert settings["trace_level"] == {"value": ["OFF"]}
    assert settings["trace_mode"] == {"value": ["triton"]}
    changed = client.update_trace_settings("addsub", {"trace_rate": "10"}, as_json=True)
    assert changed["settings"]["trace_rate"] == {"value": ["10"]}
    assert client.get_trace_settings(as_json=True)["settings"]["trace_rate"] == {"value": ["1000"]}
    cleared = client.update_trace_settings("addsub", {"trace_rate": None}, as_json=True)
    assert cleared["settings"]["trace_rate"] == {"value": ["1000"]}
    with pytest.raises(InferenceServerException) as info:
        client.get_trace_settings("nope")
    assert info.value.message() == "Request for unknown model : nope"


def test_log_settings(client: grpcclient.InferenceServerClient) -> None:
    logger = logging.getLogger("kernel")
    level = logger.level
    try:
        settings = client.get_log_settings(as_json=True)["settings"]
        assert settings["log_verbose_level"] == {"uint32_param": 0}
        assert settings["log_info"] == {"bool_param": True}
        assert settings["log_format"] == {"string_param": "default"}
        changed = client.update_log_settings({"log_verbose_level": 1}, as_json=True)
        assert changed["settings"]["log_verbose_level"] == {"uint32_param": 1}
        assert logger.level == logging.DEBUG
        client.update_log_settings({"log_verbose_level": 0, "log_info": False})
        assert logger.level == logging.WARNING
        with pytest.raises(InferenceServerException) as info:
            client.update_log_settings({"log_file": "/tmp/x.log"})
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        with pytest.raises(InferenceServerException) as info:
            client.update_log_settings({"log_format": "nope"})
        assert info.value.message() == "invalid argument for log_format, got: nope"
        client.update_log_settings({"log_info": True})
    finally:
        logger.setLevel(level)


# -- model repository ---------------------------------------------------------------------


@pytest.fixture
def explicit(tmp_path: Path) -> Iterator[RunningServer]:
    write_model(tmp_path, "addsub", ADDSUB)
    write_model(tmp_path, "repeat", REPEAT)
    with ServerThread(
        tmp_path,
        http_port=None,
        metrics_port=None,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["addsub"],
    ) as srv:
        yield srv


def test_repository_load_unload(explicit: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(explicit.grpc_url)
    try:
        index = client.get_model_repository_index(as_json=True)["models"]
        assert index == [
            {"name": "addsub", "version": "1", "state": "READY"},
            {"name": "repeat"},
        ]
        client.load_model("repeat")
        assert client.is_model_ready("repeat")

        config = json.loads(
            json.dumps({"backend": "kerneltest", "max_batch_size": 0,
                        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [-1]}],
                        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [-1]}],
                        "parameters": {"behaviour": {"string_value": "identity"}}})
        )  # fmt: skip
        client.load_model(
            "virtual", config=json.dumps(config), files={"file:1/notes.txt": b"model files"}
        )
        tensor = grpcclient.InferInput("INPUT0", [2], "INT32")
        tensor.set_data_from_numpy(np.array([3, 4], dtype=np.int32))
        np.testing.assert_array_equal(client.infer("virtual", [tensor]).as_numpy("OUTPUT0"), [3, 4])
        ready = client.get_model_repository_index(as_json=True)
        assert {m["name"] for m in ready["models"]} == {"addsub", "repeat", "virtual"}

        client.unload_model("addsub")
        assert not client.is_model_ready("addsub")
        rows = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert rows["addsub"]["state"] == "UNAVAILABLE"
        assert rows["addsub"]["reason"] == "unloaded"
        with pytest.raises(InferenceServerException) as info:
            client.infer("addsub", _addsub_inputs(A, B))
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert (
            info.value.message() == "Request for unknown model: 'addsub' has no available versions"
        )
        client.unload_model("never-heard-of")  # accepted, as in Triton
    finally:
        client.close()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("config", "bytes_param",
         "invalid value type for load parameter 'config', expected string_param."),
        ("file:1/x", "string_param",
         "invalid value type for load parameter 'file:1/x', expected bytes_param."),
        ("bogus", "string_param", "unrecognized load parameter 'bogus'."),
    ],
)  # fmt: skip
def test_repository_load_parameter_errors(
    explicit: RunningServer, key: str, value: str, message: str
) -> None:
    with grpc.insecure_channel(explicit.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.RepositoryModelLoadRequest(model_name="repeat")
        setattr(request.parameters[key], value, b"{}" if value == "bytes_param" else "{}")
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request, timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == message


def test_log_settings_are_shared_by_both_endpoints(tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    with ServerThread(tmp_path, metrics_port=None) as srv:
        http = httpclient.InferenceServerClient(srv.http_url)
        grpc_client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            http.update_log_settings({"log_verbose_level": 2, "log_info": False})
            settings = grpc_client.get_log_settings(as_json=True)["settings"]
            assert settings["log_verbose_level"]["uint32_param"] == 2
            assert settings["log_info"]["bool_param"] is False
            grpc_client.update_log_settings({"log_verbose_level": 0, "log_info": True})
            assert http.get_log_settings()["log_verbose_level"] == 0
        finally:
            http.close()
            grpc_client.close()


def test_trace_settings_are_shared_by_both_endpoints(tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    with ServerThread(tmp_path, metrics_port=None) as srv:
        http = httpclient.InferenceServerClient(srv.http_url)
        grpc_client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            http.update_trace_settings(settings={"trace_rate": "7", "trace_level": ["TIMESTAMPS"]})
            settings = grpc_client.get_trace_settings(as_json=True)["settings"]
            assert settings["trace_rate"]["value"] == ["7"]
            assert settings["trace_level"]["value"] == ["TIMESTAMPS"]
            grpc_client.update_trace_settings(settings={"trace_rate": None})
            assert http.get_trace_settings()["trace_rate"] == "1000"
        finally:
            http.close()
            grpc_client.close()
