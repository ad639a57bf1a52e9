"""Requests that repeat a shape (``kernel.frontends._grpc._tensors``' plans): a request equal to
an earlier one but for its id and data is built from what that one decoded to. These tests send
such requests with tritonclient, and raw stubs for what it would not build, and check every
answer is the one a first request gets: the data and id of each request, its parameters, and
Triton's error for data that no longer fits the shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

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
