"""Requests that repeat a shape (``kernel.frontends._grpc._tensors``' plans): a request equal to
an earlier one but for its id and data is built from what that one decoded to. These tests send
such requests with tritonclient, and raw stubs for what it would not build, and check every
answer is the one a first request gets: the data and id of each request, its parameters, and
Triton's error for data that no longer fits the shape."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kernel.frontends._grpc._messages import InferRequestReader
from kernel.frontends._grpc._tensors import TensorCodec
from kernel.testing import RunningServer, ServerThread, run_server, write_model


def _identity(datatype: str) -> str:
    return f"""
backend: "kerneltest"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_{datatype} dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_{datatype} dims: [ -1 ] }} ]
parameters {{ key: "behaviour" value {{ string_value: "identity" }} }}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("plan_models")
    write_model(repo, "fp32", _identity("FP32"))
    write_model(repo, "int64", _identity("INT64"))
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        yield srv


@pytest.fixture
def client(served: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(served.grpc_url)
    yield c
    c.close()


def _input(values: np.ndarray[Any, Any], datatype: str) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return [tensor]


def test_each_repeated_request_gets_its_own_data_and_id(
    client: grpcclient.InferenceServerClient,
) -> None:
    for n in range(6):
        fp32 = np.arange(4, dtype=np.float32) * n
        result = client.infer("fp32", _input(fp32, "FP32"), request_id=f"f{n}")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), fp32)
        assert result.get_response().id == f"f{n}"
        int64 = np.full(n + 1, n, dtype=np.int64)  # a new shape each time
        result = client.infer("int64", _input(int64, "INT64"))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), int64)
        assert result.get_response().id == ""


def test_parameters_reach_the_model_each_time(client: grpcclient.InferenceServerClient) -> None:
    values = np.ones(2, dtype=np.float32)
    sent = {"text": "hello", "count": -3}
    for n in range(3):
        result = client.infer("fp32", _input(values * n, "FP32"), parameters=sent, priority=1)
        got = result.get_response().parameters
        assert {k: v.WhichOneof("parameter_choice") for k, v in got.items()} == {
            "text": "string_param",
            "count": "int64_param",
        }
        assert got["text"].string_param == "hello" and got["count"].int64_param == -3
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values * n)


def _request(data: list[bytes]) -> Any:
    request = service_pb2.ModelInferRequest(model_name="fp32", id="same-shape")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    request.raw_input_contents.extend(data)
    return request


def test_data_that_no_longer_fits_gets_the_first_answer(served: RunningServer) -> None:
    channel = grpc.insecure_channel(served.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        errors = []
        for _ in range(2):  # the second time, a plan of the good request exists
            good = stub.ModelInfer(_request([bytes(16)]), timeout=30)
            assert good.raw_output_contents == [bytes(16)]
            for data in ([bytes(12)], [bytes(16), bytes(16)]):
                with pytest.raises(grpc.RpcError) as info:
                    stub.ModelInfer(_request(data), timeout=30)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                errors.append(info.value.details())
        assert errors[:2] == errors[2:]
        assert "Expected 16, got 12" in errors[0]
    finally:
        channel.close()


async def test_the_codec_keeps_one_plan_per_shape(tmp_path: Path) -> None:
    write_model(tmp_path, "fp32", _identity("FP32"))
    async with run_server(tmp_path, http_port=None, grpc_port=None, metrics_port=None) as srv:
        codec = TensorCodec(srv.server)
        arrays = []
        for n in range(4):
            data = (np.arange(4, dtype=np.float32) + n).tobytes()
            wire = _request([data]).SerializeToString()
            decoded = codec.decode(InferRequestReader.FromString(wire), unary=True)
            arrays.append(decoded.request.inputs["INPUT0"])
            assert decoded.request.id == "same-shape"
        assert len(codec._plans) == 1
        for n, array in enumerate(arrays):
            np.testing.assert_array_equal(array, np.arange(4, dtype=np.float32) + n)


def _addsub_config() -> str:
    return """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "behaviour" value { string_value: "addsub" } }
"""


def test_repeated_shared_memory_requests_read_and_write_their_regions(
    tmp_path: Path,
) -> None:
    """Plans hold inputs and outputs in system shared memory: each repeat reads the region's
    data of the moment, writes its output there, mixes raw contents as the first request did,
    and a region unregistered since gets the first request's error."""
    write_model(tmp_path, "addsub", _addsub_config())
    key_in, key_out = f"/kernel_plan_in_{os.getpid()}", f"/kernel_plan_out_{os.getpid()}"
    region_in = shm.create_shared_memory_region("plan_in", key_in, 32)
    region_out = shm.create_shared_memory_region("plan_out", key_out, 16)
    try:
        with ServerThread(tmp_path, http_port=None, metrics_port=None) as srv:
            client = grpcclient.InferenceServerClient(srv.grpc_url)
            try:
                client.register_system_shared_memory("plan_in", key_in, 32)
                client.register_system_shared_memory("plan_out", key_out, 16)
                for n in range(4):
                    a = np.arange(4, dtype=np.float32) + n
                    b = np.full(4, 10.0 * n, dtype=np.float32)
                    shm.set_shared_memory_region(region_in, [a, b])
                    inputs = [
                        grpcclient.InferInput("INPUT0", [4], "FP32"),
                        grpcclient.InferInput("INPUT1", [4], "FP32"),
                    ]
                    inputs[0].set_shared_memory("plan_in", 16)
                    inputs[1].set_shared_memory("plan_in", 16, offset=16)
                    outputs = [
                        grpcclient.InferRequestedOutput("OUTPUT0"),
                        grpcclient.InferRequestedOutput("OUTPUT1"),
                    ]
                    outputs[0].set_shared_memory("plan_out", 16)
                    result = client.infer("addsub", inputs, outputs=outputs, request_id=f"r{n}")
                    assert result.get_response().id == f"r{n}"
                    written = shm.get_contents_as_numpy(region_out, np.float32, [4])
                    np.testing.assert_array_equal(written, a + b)
                    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

                    mixed = [grpcclient.InferInput("INPUT0", [4], "FP32")]
                    mixed[0].set_shared_memory("plan_in", 16, offset=16)
                    mixed.append(grpcclient.InferInput("INPUT1", [4], "FP32"))
                    mixed[1].set_data_from_numpy(a)
                    result = client.infer("addsub", mixed)
                    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), b + a)

                client.unregister_system_shared_memory("plan_in")
                with pytest.raises(InferenceServerException) as info:
                    client.infer("addsub", inputs, outputs=outputs)
                assert info.value.status() == "StatusCode.NOT_FOUND"
                assert "Unable to find shared memory region: 'plan_in'" in info.value.message()
            finally:
                client.unregister_system_shared_memory()
                client.close()
    finally:
        shm.destroy_shared_memory_region(region_in)
        shm.destroy_shared_memory_region(region_out)


async def test_the_codec_plans_shared_memory_requests(tmp_path: Path) -> None:
    """A request with its inputs in shared memory is planned; each decode views the region."""
    write_model(tmp_path, "fp32", _identity("FP32"))
    async with run_server(tmp_path, http_port=None, grpc_port=None, metrics_port=None) as srv:
        memory = srv.server.shared_memory
        path = Path("/dev/shm") / f"kernel_codec_plan_{os.getpid()}"
        path.write_bytes(bytes(16))
        try:
            memory.register("region", f"/{path.name}", 0, 16)
            codec = TensorCodec(srv.server)
            request = service_pb2.ModelInferRequest(model_name="fp32", id="x")
            tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
            tensor.parameters["shared_memory_region"].string_param = "region"
            tensor.parameters["shared_memory_byte_size"].int64_param = 16
            for n in range(3):
                values = np.arange(4, dtype=np.float32) * n
                with path.open("r+b") as f:
                    f.write(values.tobytes())
                wire = request.SerializeToString()
                decoded = codec.decode(InferRequestReader.FromString(wire), unary=True)
                np.testing.assert_array_equal(decoded.request.inputs["INPUT0"], values)
            assert len(codec._plans) == 1
            memory.unregister("region")
        finally:
            path.unlink()
