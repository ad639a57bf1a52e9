"""The HTTP/REST endpoint against the real tritonclient (sync and asyncio): health, metadata,
config, statistics, inference (JSON and binary tensors, every datatype family, classification,
parameters, compression, shared memory), model repository, trace and logging settings."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import queue
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode
from kernel._inference import RequestFlags
from kernel._server import EXTENSIONS
from kernel.frontends._http._infer import BINARY, JSON, decode_request
from kernel.testing import RunningServer, ServerThread, run_server, write_model


def model_config(
    behaviour: str,
    *,
    datatype: str = "TYPE_FP32",
    dims: str = "[ 4 ]",
    max_batch_size: int = 0,
    inputs: int = 2,
    extra: str = "",
    parameters: dict[str, str] | None = None,
) -> str:
    """A ``kerneltest`` config with ``inputs`` inputs and as many outputs."""
    params = {"behaviour": behaviour, **(parameters or {})}
    io_in = ",".join(
        f'{{ name: "INPUT{i}" data_type: {datatype} dims: {dims} }}' for i in range(inputs)
    )
    io_out = ",".join(
        f'{{ name: "OUTPUT{i}" data_type: {datatype} dims: {dims} }}' for i in range(inputs)
    )
    param_text = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    return (
        f'backend: "kerneltest"\nmax_batch_size: {max_batch_size}\n'
        f"input [ {io_in} ]\noutput [ {io_out} ]\n{param_text}\n{extra}\n"
    )


CLASSIFIER = """
backend: "kerneltest"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""


def build_repository(root: Path) -> Path:
    write_model(root, "addsub", model_config("addsub"))
    write_model(root, "ident", model_config("identity", max_batch_size=8))
    write_model(root, "strings", model_config("identity", datatype="TYPE_STRING", dims="[ -1 ]"))
    write_model(root, "bools", model_config("identity", datatype="TYPE_BOOL", dims="[ -1 ]"))
    write_model(root, "halves", model_config("identity", datatype="TYPE_FP16", dims="[ -1 ]"))
    write_model(root, "bhalves", model_config("identity", datatype="TYPE_BF16", dims="[ -1 ]"))
    write_model(root, "ints", model_config("identity", datatype="TYPE_INT32", dims="[ -1, -1 ]"))
    write_model(root, "one_input", model_config("identity", dims="[ -1 ]", inputs=1))
    write_model(
        root,
        "classifier",
        CLASSIFIER,
        files={"labels.txt": b"cat\ndog\nbird\nfish\n"},
    )
    write_model(
        root,
        "sleepy",
        model_config("sleep", parameters={"sleep_ms": "300"}, inputs=1, dims="[ -1 ]"),
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = build_repository(tmp_path_factory.mktemp("models"))
    with ServerThread(repository, grpc_port=None) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.http_url) as c:
        yield c


def fp32_inputs(a: np.ndarray, b: np.ndarray, *, binary: bool = True) -> list[Any]:
    inputs = []
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        tensor = httpclient.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    return inputs


def raw_request(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# -- health and metadata ----------------------------------------------------------------------


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "triton"
    assert metadata["version"]
    assert set(metadata["extensions"]) == set(EXTENSIONS)
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(EXTENSIONS)


def test_health_answers_with_empty_bodies(server: RunningServer) -> None:
    status, _, body = raw_request(server, "GET", "/v2/health/live")
    assert (status, body) == (200, b"")
    status, _, body = raw_request(server, "GET", "/v2/health/ready")
    assert (status, body) == (200, b"")


def test_model_metadata_ready_and_config(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("ident")
    assert metadata["name"] == "ident"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "kerneltest"
    assert metadata["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}
    assert client.get_model_metadata("ident", "1")["versions"] == ["1"]
    assert client.is_model_ready("ident")
    assert client.is_model_ready("ident", "1")
    assert not client.is_model_ready("ident", "2")
    assert not client.is_model_ready("missing")
    config = client.get_model_config("ident")
    assert config["name"] == "ident"
    assert config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_FP32"  # proto field names, enums by name
    assert config["parameters"]["behaviour"] == {"string_value": "identity"}


def test_model_names_are_url_decoded(tmp_path: Path) -> None:
    write_model(tmp_path, "my model", model_config("identity"))
    with (
        ServerThread(tmp_path, grpc_port=None, metrics_port=None) as running,
        httpclient.InferenceServerClient(running.http_url) as c,
    ):
        assert c.get_model_metadata("my model")["name"] == "my model"
        a = np.ones(4, dtype=np.float32)
        result = c.infer("my model", fp32_inputs(a, a))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a)


# -- inference ---------------------------------------------------------------------------------


def test_infer_binary_in_and_out(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(4, dtype=np.float32)
    b = np.full(4, 2, dtype=np.float32)
    result = client.infer("addsub", fp32_inputs(a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["model_name"] == "addsub"
    assert response["model_version"] == "1"
    assert response["outputs"][0]["parameters"] == {"binary_data_size": 16}


def test_infer_json_in_and_out(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(4, dtype=np.float32)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    result = client.infer("addsub", fp32_inputs(a, a, binary=False), outputs=outputs)
    response = result.get_response()
    assert response["outputs"][0]["data"] == [0.0, 2.0, 4.0, 6.0]
    assert response["outputs"][1]["data"] == [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)


def test_only_requested_outputs_are_sent_and_id_is_echoed(
    client: httpclient.InferenceServerClient,
) -> None:
    a = np.arange(4, dtype=np.float32)
    result = client.infer(
        "addsub",
        fp32_inputs(a, a),
        outputs=[httpclient.InferRequestedOutput("OUTPUT1")],
        request_id="req-7",
    )
    response = result.get_response()
    assert response["id"] == "req-7"
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None


def test_mixed_binary_and_json_outputs(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=True),
    ]
    result = client.infer("ident", fp32_inputs(a, a + 1), outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a + 1)
    out0, out1 = result.get_response()["outputs"]
    assert "data" in out0 and "parameters" not in out0
    assert out1["parameters"] == {"binary_data_size": 32}


def test_request_parameters_round_trip(client: httpclient.InferenceServerClient) -> None:
    a = np.ones((1, 4), dtype=np.float32)
    result = client.infer(
        "ident",
        fp32_inputs(a, a),
        parameters={"text": "hello", "count": 3, "flag": True},
    )
    # the identity model answers with the request's parameters
    assert result.get_response()["parameters"] == {"text": "hello", "count": 3, "flag": True}


def test_bytes_tensors_json_and_binary(client: httpclient.InferenceServerClient) -> None:
    values = np.array([b"alpha", b"", "\u00e9t\u00e9".encode()], dtype=np.object_)
    for binary in (True, False):
        inputs = []
        for i in range(2):
            tensor = httpclient.InferInput(f"INPUT{i}", [3], "BYTES")
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        outputs = [
            httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=binary) for i in (0, 1)
        ]
        result = client.infer("strings", inputs, outputs=outputs)
        out = result.as_numpy("OUTPUT0")
        assert out is not None
        assert [bytes(v) if binary else v.encode() for v in out] == list(values)
        assert result.get_response()["outputs"][0]["datatype"] == "BYTES"


def test_bool_tensors_json_and_binary(client: httpclient.InferenceServerClient) -> None:
    values = np.array([True, False, True])
    for binary in (True, False):
        inputs = []
        for i in range(2):
            tensor = httpclient.InferInput(f"INPUT{i}", [3], "BOOL")
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        outputs = [
            httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=binary) for i in (0, 1)
        ]
        result = client.infer("bools", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), values)
        if not binary:
            assert result.get_response()["outputs"][0]["data"] == [True, False, True]


def test_fp16_and_bf16_tensors(
    client: httpclient.InferenceServerClient, server: RunningServer
) -> None:
    halves = np.array([1.5, -2.0, 0.25], dtype=np.float16)
    inputs = []
    for i in range(2):
        tensor = httpclient.InferInput(f"INPUT{i}", [3], "FP16")
        tensor.set_data_from_numpy(halves)
        inputs.append(tensor)
    result = client.infer("halves", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), halves)
    # JSON in and out too (Triton refuses FP16 in JSON; the kernel accepts it)
    json_inputs = []
    for i in range(2):
        tensor = httpclient.InferInput(f"INPUT{i}", [3], "FP16")
        tensor.set_data_from_numpy(halves, binary_data=False)
        json_inputs.append(tensor)
    result = client.infer(
        "halves", json_inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT0", False)]
    )
    assert result.get_response()["outputs"][0]["data"] == [1.5, -2.0, 0.25]
    bf16 = np.array([1.0, -0.5, 3.0], dtype=ml_dtypes.bfloat16)
    bf_inputs = []
    for i in range(2):
        tensor = httpclient.InferInput(f"INPUT{i}", [3], "BF16")
        tensor.set_data_from_numpy(bf16)
        bf_inputs.append(tensor)
    result = client.infer("bhalves", bf_inputs)
    out = result.get_output("OUTPUT0")
    assert out is not None and out["datatype"] == "BF16"
    assert out["parameters"] == {"binary_data_size": 6}
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), bf16)

    # tritonclient only sends BF16 in binary; JSON numbers work too (as for FP16)
    body = {
        "inputs": [
            {"name": f"INPUT{i}", "datatype": "BF16", "shape": [3], "data": [1.0, -0.5, 3.0]}
            for i in (0, 1)
        ],
        "outputs": [{"name": "OUTPUT1"}],
    }
    status, _, raw = raw_request(server, "POST", "/v2/models/bhalves/infer",
                                 json.dumps(body).encode())  # fmt: skip
    assert status == 200, raw
    assert json.loads(raw)["outputs"][0]["data"] == [1.0, -0.5, 3.0]


def test_nested_and_flat_json_data(server: RunningServer) -> None:
    # regular nesting, flat, and ragged nesting (Triton only counts the leaves)
    for data in ([[1, 2, 3], [4, 5, 6]], [1, 2, 3, 4, 5, 6], [[1, 2], [3, 4, 5, 6]]):
        body = {
            "inputs": [
                {"name": f"INPUT{i}", "datatype": "INT32", "shape": [2, 3], "data": data}
                for i in (0, 1)
            ],
            "outputs": [{"name": "OUTPUT0"}],
        }
        status, headers, raw = raw_request(
            server, "POST", "/v2/models/ints/infer", json.dumps(body).encode()
        )
        assert status == 200, raw
        assert headers["content-type"] == "application/json"
        out = json.loads(raw)["outputs"][0]
        assert out == {"name": "OUTPUT0", "datatype": "INT32", "shape": [2, 3],
                       "data": [1, 2, 3, 4, 5, 6]}  # fmt: skip


def test_raw_binary_request_for_a_single_input_model(server: RunningServer) -> None:
    values = np.arange(6, dtype=np.float32)
    status, headers, body = raw_request(
        server,
        "POST",
        "/v2/models/one_input/infer",
        values.tobytes(),
        {"Inference-Header-Content-Length": "0"},
    )
    assert status == 200, body
    header_length = int(headers["inference-header-content-length"])
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["shape"] == [6]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], np.float32), values)


def test_classification(client: httpclient.InferenceServerClient) -> None:
    scores = np.array([[0.1, 0.7, 0.2, 0.0], [5.0, 1.0, 3.0, 4.0]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [2, 4], "FP32")
    tensor.set_data_from_numpy(scores)
    for binary in (True, False):
        result = client.infer(
            "classifier",
            [tensor],
            outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary, class_count=2)],
        )
        out = result.as_numpy("OUTPUT0")
        assert out is not None and out.shape == (2, 2)
        rows = [[bytes(v).decode() if binary else v for v in row] for row in out]
        assert rows == [
            ["0.700000:1:dog", "0.200000:2:bird"],
            ["5.000000:0:cat", "4.000000:3:fish"],
        ]
        assert result.get_output("OUTPUT0")["datatype"] == "BYTES"
    # more classes than values: all of them
    result = client.infer(
        "classifier",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=10)],
    )
    assert result.as_numpy("OUTPUT0").shape == (2, 4)


def test_sequence_priority_and_timeout_reach_the_request(server: RunningServer) -> None:
    header = {
        "id": "s1",
        "parameters": {
            "sequence_id": 42,
            "sequence_start": True,
            "sequence_end": False,
            "priority": 2,
            "timeout": 5000,
            "binary_data_output": True,
            "custom": "x",
        },
        "inputs": [
            {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
            for i in (0, 1)
        ],
    }
    body = memoryview(json.dumps(header).encode())
    call = decode_request(server.server, "addsub", "", body, None)
    request = call.request
    assert request.correlation_id == 42
    assert request.flags == RequestFlags.SEQUENCE_START
    assert request.priority == 2
    assert request.timeout_us == 5000
    assert request.parameters == {"custom": "x"}
    assert call.default_kind == BINARY
    header["parameters"] = {"sequence_id": "abc", "sequence_end": True}
    call = decode_request(
        server.server, "addsub", "1", memoryview(json.dumps(header).encode()), None
    )
    assert call.request.correlation_id == "abc"
    assert call.request.flags == RequestFlags.SEQUENCE_END
    assert call.request.model_version == 1
    assert call.default_kind == JSON


def test_sequence_parameters_from_tritonclient(client: httpclient.InferenceServerClient) -> None:
    a = np.ones(4, dtype=np.float32)
    result = client.infer(
        "addsub", fp32_inputs(a, a), sequence_id="seq-1", sequence_start=True, sequence_end=True
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)


def test_binary_inputs_are_views_of_the_body(server: RunningServer) -> None:
    values = np.arange(4, dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": f"INPUT{i}",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
                for i in (0, 1)
            ]
        }
    ).encode()
    body = bytearray(header + values.tobytes() * 2)
    call = decode_request(server.server, "addsub", "", memoryview(body), len(header))
    array = call.request.inputs["INPUT1"]
    np.testing.assert_array_equal(array, values)
    body[-16:] = bytes(16)  # the array shares the body's memory: no copy was made
    assert not array.any()


@pytest.mark.parametrize(
    ("request_compression", "response_compression"),
    [("gzip", None), ("deflate", None), (None, "gzip"), (None, "deflate"), ("gzip", "gzip")],
)
def test_compression(
    client: httpclient.InferenceServerClient,
    request_compression: str | None,
    response_compression: str | None,
) -> None:
    a = np.arange(4, dtype=np.float32)
    result = client.infer(
        "addsub",
        fp32_inputs(a, a),
        request_compression_algorithm=request_compression,
        response_compression_algorithm=response_compression,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)


def test_response_compression_header(server: RunningServer) -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
                for i in (0, 1)
            ]
        }
    ).encode()
    status, headers, raw = raw_request(
        server, "POST", "/v2/models/addsub/infer", body, {"Accept-Encoding": "deflate;q=0.5, gzip"}
    )
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    import gzip

    assert json.loads(gzip.decompress(raw))["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


async def test_asyncio_client(server: RunningServer) -> None:
    client = aiohttpclient.InferenceServerClient(server.http_url)
    try:
        assert await client.is_server_live()
        assert await client.is_model_ready("addsub")
        metadata = await client.get_model_metadata("addsub")
        assert metadata["outputs"][1]["name"] == "OUTPUT1"
        a = np.arange(4, dtype=np.float32)
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = aiohttpclient.InferInput(name, [4], "FP32")
            tensor.set_data_from_numpy(a)
            inputs.append(tensor)
        results = await asyncio.gather(*(client.infer("addsub", inputs) for _ in range(8)))
        for result in results:
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
        stats = await client.get_inference_statistics("addsub")
        assert stats["model_stats"][0]["inference_count"] >= 8
    finally:
        await client.close()


# -- statistics --------------------------------------------------------------------------------


def test_statistics(client: httpclient.InferenceServerClient) -> None:
    a = np.ones((3, 4), dtype=np.float32)
    before = client.get_inference_statistics("ident")["model_stats"][0]
    client.infer("ident", fp32_inputs(a, a))
    # an execution is counted when execute returns, which may be just after the response left
    for _ in range(200):
        stats = client.get_inference_statistics("ident", "1")["model_stats"]
        if stats[0]["execution_count"] > before["execution_count"]:
            break
        time.sleep(0.01)
    assert len(stats) == 1
    entry = stats[0]
    assert entry["name"] == "ident" and entry["version"] == "1"
    assert entry["inference_count"] == before["inference_count"] + 3
    assert entry["execution_count"] == before["execution_count"] + 1
    success = entry["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1
    assert success["ns"] > 0
    assert set(entry["inference_stats"]) == {
        "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
        "cache_hit", "cache_miss",
    }  # fmt: skip
    batch3 = [b for b in entry["batch_stats"] if b["batch_size"] == 3]
    assert batch3 and batch3[0]["compute_infer"]["count"] >= 1
    assert entry["last_inference"] > 0
    everything = client.get_inference_statistics()["model_stats"]
    assert {"addsub", "ident", "strings"} <= {s["name"] for s in everything}


# -- shared memory -----------------------------------------------------------------------------


def test_system_shared_memory_inputs_and_outputs(client: httpclient.InferenceServerClient) -> None:
    suffix = uuid.uuid4().hex[:8]
    in_key, out_key = f"/kt_in_{suffix}", f"/kt_out_{suffix}"
    in_handle = shm.create_shared_memory_region("in_region", in_key, 64)
    out_handle = shm.create_shared_memory_region("out_region", out_key, 64)
    try:
        a = np.arange(4, dtype=np.float32)
        b = np.full(4, 10, dtype=np.float32)
        shm.set_shared_memory_region(in_handle, [a, b])
        client.register_system_shared_memory("in_region", in_key, 64)
        client.register_system_shared_memory("out_region", out_key, 64)
        status = client.get_system_shared_memory_status()
        assert {"name": "in_region", "key": in_key, "offset": 0, "byte_size": 64} in status
        assert client.get_system_shared_memory_status("out_region")[0]["key"] == out_key

        i0 = httpclient.InferInput("INPUT0", [4], "FP32")
        i0.set_shared_memory("in_region", 16)
        i1 = httpclient.InferInput("INPUT1", [4], "FP32")
        i1.set_shared_memory("in_region", 16, offset=16)
        o0 = httpclient.InferRequestedOutput("OUTPUT0")
        o0.set_shared_memory("out_region", 16)
        o1 = httpclient.InferRequestedOutput("OUTPUT1")
        o1.set_shared_memory("out_region", 16, offset=16)
        result = client.infer("addsub", [i0, i1], outputs=[o0, o1])
        outputs = result.get_response()["outputs"]
        assert [o["name"] for o in outputs] == ["OUTPUT0", "OUTPUT1"]
        assert all("data" not in o for o in outputs)
        np.testing.assert_array_equal(
            shm.get_contents_as_numpy(out_handle, np.float32, [8]), np.concatenate([a + b, a - b])
        )

        small = httpclient.InferRequestedOutput("OUTPUT0")
        small.set_shared_memory("out_region", 8)
        with pytest.raises(InferenceServerException) as info:
            client.infer("addsub", [i0, i1], outputs=[small])
        assert info.value.status() == "400"
        assert "should be at least 16 bytes to hold the results" in info.value.message()

        client.unregister_system_shared_memory("in_region")
        assert [r["name"] for r in client.get_system_shared_memory_status()] == ["out_region"]
        with pytest.raises(InferenceServerException) as info:
            client.get_system_shared_memory_status("in_region")
        assert info.value.status() == "404"
        client.unregister_system_shared_memory()
        assert client.get_system_shared_memory_status() == []
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


def test_cuda_shared_memory_without_gpu(client: httpclient.InferenceServerClient) -> None:
    assert client.get_cuda_shared_memory_status() == []
    with pytest.raises(InferenceServerException) as info:
        client.register_cuda_shared_memory("gpu_region", b"\0" * 64, 0, 64)
    assert info.value.status() == "400"
    assert info.value.message() == (
        "failed to register CUDA shared memory region: 'gpu_region', GPUs not supported"
    )
    client.unregister_cuda_shared_memory()


# -- trace and logging -------------------------------------------------------------------------


def test_trace_settings(client: httpclient.InferenceServerClient) -> None:
    settings = client.get_trace_settings()
    assert settings["trace_level"] == ["OFF"]
    assert settings["trace_rate"] == "1000"
    updated = client.update_trace_settings(settings={"trace_rate": "50"})
    assert updated["trace_rate"] == "50"
    model = client.update_trace_settings("addsub", {"trace_count": "10"})
    assert model["trace_count"] == "10" and model["trace_rate"] == "50"
    assert client.get_trace_settings()["trace_count"] == "-1"
    cleared = client.update_trace_settings("addsub", {"trace_count": None})
    assert cleared["trace_count"] == "-1"
    assert client.update_trace_settings(settings={"trace_rate": None})["trace_rate"] == "1000"
    with pytest.raises(InferenceServerException) as info:
        client.get_trace_settings("missing")
    assert info.value.status() == "400"
    assert info.value.message() == "Request for unknown model : missing"


def test_log_settings_apply_to_the_kernel_logger(
    client: httpclient.InferenceServerClient,
) -> None:
    logger = logging.getLogger("kernel")
    previous = logger.level
    try:
        settings = client.get_log_settings()
        assert settings == {
            "log_file": "",
            "log_info": True,
            "log_warning": True,
            "log_error": True,
            "log_verbose_level": 0,
            "log_format": "default",
        }
        updated = client.update_log_settings({"log_verbose_level": 2})
        assert updated["log_verbose_level"] == 2
        assert logger.getEffectiveLevel() == logging.DEBUG
        client.update_log_settings({"log_verbose_level": 0, "log_info": False})
        assert logger.getEffectiveLevel() == logging.WARNING
        with pytest.raises(InferenceServerException) as info:
            client.update_log_settings({"log_format": "fancy"})
        assert info.value.message() == "invalid argument for log_format, got: fancy"
    finally:
        client.update_log_settings({"log_verbose_level": 0, "log_info": True})
        logger.setLevel(previous)


# -- model repository --------------------------------------------------------------------------


@pytest.fixture
def explicit_server(tmp_path: Path) -> Iterator[RunningServer]:
    write_model(tmp_path, "a", model_config("addsub"))
    write_model(tmp_path, "b", model_config("identity"))
    with ServerThread(
        tmp_path,
        grpc_port=None,
        metrics_port=None,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["a"],
    ) as running:
        yield running


def test_repository_index_load_and_unload(explicit_server: RunningServer) -> None:
    with httpclient.InferenceServerClient(explicit_server.http_url) as c:
        index = c.get_model_repository_index()
        assert {"name": "a", "version": "1", "state": "READY"} in index
        assert {"name": "b"} in index
        c.load_model("b")
        assert c.is_model_ready("b")
        status, _, body = raw_request(
            explicit_server, "POST", "/v2/repository/index", b'{"ready": true}'
        )
        assert status == 200
        assert {row["name"] for row in json.loads(body)} == {"a", "b"}
        c.unload_model("b")
        assert not c.is_model_ready("b")
        index = c.get_model_repository_index()
        (row,) = [r for r in index if r["name"] == "b"]
        assert (row["state"], row["reason"]) == ("UNAVAILABLE", "unloaded")


def test_load_with_config_override_and_files(explicit_server: RunningServer) -> None:
    config = {
        "backend": "kerneltest",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
        "parameters": {"behaviour": {"string_value": "identity"}},
    }
    with httpclient.InferenceServerClient(explicit_server.http_url) as c:
        c.load_model("c", config=json.dumps(config), files={"file:1/notes.txt": b"hello"})
        assert c.get_model_config("c")["input"][0]["data_type"] == "TYPE_INT32"
        tensor = httpclient.InferInput("INPUT0", [2], "INT32")
        tensor.set_data_from_numpy(np.array([7, 8], dtype=np.int32))
        result = c.infer("c", [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [7, 8])
        c.unload_model("c")


# -- liveness and cancellation under load ------------------------------------------------------


async def test_liveness_answers_while_inference_saturates(server: RunningServer) -> None:
    client = aiohttpclient.InferenceServerClient(server.http_url, conn_limit=16)
    try:
        values = np.ones(2, dtype=np.float32)
        tensor = aiohttpclient.InferInput("INPUT0", [2], "FP32")
        tensor.set_data_from_numpy(values)
        inferences = [asyncio.ensure_future(client.infer("sleepy", [tensor])) for _ in range(6)]
        # wait (bounded) until the model holds work, then ask for liveness repeatedly
        for _ in range(200):
            stats = await client.get_inference_statistics("sleepy")
            if stats["model_stats"][0]["execution_count"] or any(f.done() for f in inferences):
                break
            await asyncio.sleep(0.01)
        for _ in range(5):
            assert await client.is_server_live()
        # six requests on one instance sleeping 300 ms each cannot all be done yet
        assert not all(f.done() for f in inferences)
        for result in await asyncio.gather(*inferences):
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
    finally:
        await client.close()


def _canceled_failures(client: httpclient.InferenceServerClient) -> int:
    stats = client.get_inference_statistics("sleepy")["model_stats"][0]
    return int(stats["inference_stats"]["fail"]["count"])


def test_client_disconnect_cancels_queued_inference(
    server: RunningServer, client: httpclient.InferenceServerClient
) -> None:
    values = np.ones(2, dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    request = (
        b"POST /v2/models/sleepy/infer HTTP/1.1\r\nHost: x\r\n"
        + b"Inference-Header-Content-Length: %d\r\n" % len(header)
        + b"Content-Length: %d\r\n\r\n" % (len(header) + 8)
        + header
        + values.tobytes()
    )
    failures_before = _canceled_failures(client)
    host, port = server.http_url.split(":")
    busy = socket.create_connection((host, int(port)))
    gone = socket.create_connection((host, int(port)))
    sleepy = server.server.route("sleepy")
    try:
        busy.sendall(request)  # occupies the only instance for 300 ms
        for _ in range(300):
            if sleepy.executing:
                break
            time.sleep(0.01)
        assert sleepy.executing == 1
        gone.sendall(request)  # queued behind it (in the scheduler or in the instance's hands) ...
        for _ in range(300):
            if sleepy.in_flight == 2:
                break
            time.sleep(0.01)
    finally:
        gone.close()  # ... and abandoned
    try:
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = busy.recv(65536)
            assert chunk
            response += chunk
        assert response.startswith(b"HTTP/1.1 200")
    finally:
        busy.close()
    for _ in range(300):
        if _canceled_failures(client) > failures_before:
            break
        time.sleep(0.01)
    assert _canceled_failures(client) == failures_before + 1


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v2/models/addsub HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"200", b"404"]
    assert b'"name":"addsub"' in data


def test_chunked_request_body(server: RunningServer) -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
                for i in (0, 1)
            ]
        }
    ).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 10]), body[i : i + 10])
                      for i in range(0, len(body), 10))  # fmt: skip
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v2/models/addsub/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(payload)["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


def test_expect_continue(server: RunningServer) -> None:
    body = struct.pack("<4f", 1, 2, 3, 4)
    header = json.dumps(
        {
            "inputs": [
                {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4],
                 "parameters": {"binary_data_size": 16}}
                for i in (0, 1)
            ]
        }
    ).encode()  # fmt: skip
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v2/models/addsub/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\nInference-Header-Content-Length: %d\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(header), len(header) + 32)
        )
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(header + body + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_serves_on_uvloop(tmp_path: Path) -> None:
    """``kernel serve`` runs on uvloop, whose transports are not asyncio classes."""
    uvloop = pytest.importorskip("uvloop")
    write_model(tmp_path, "addsub", model_config("addsub"))
    urls: queue.Queue[str] = queue.Queue()
    done = threading.Event()

    async def serve() -> None:
        async with run_server(tmp_path, grpc_port=None) as running:
            urls.put(running.http_url)
            urls.put(running.metrics_url)
            await asyncio.to_thread(done.wait, 60)

    thread = threading.Thread(target=uvloop.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        http_url, metrics_url = urls.get(timeout=60), urls.get(timeout=60)
        with httpclient.InferenceServerClient(http_url) as c:
            assert c.is_server_live()
            a = np.arange(4, dtype=np.float32)
            result = c.infer("addsub", fp32_inputs(a, a))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
        host, port = metrics_url.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/metrics")
        assert b"nv_inference_request_success" in conn.getresponse().read()
        conn.close()
    finally:
        done.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_stop_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "sleepy",
        model_config("sleep", parameters={"sleep_ms": "200"}, inputs=1, dims="[ -1 ]"),
    )
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [5]}]}
    ).encode()
    thread = ServerThread(tmp_path, grpc_port=None, metrics_port=None)
    running = thread.__enter__()
    stopped = False
    try:
        host, port = running.http_url.split(":")
        idle = socket.create_connection((host, int(port)))
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v2/models/sleepy/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            sleepy = running.server.route("sleepy")
            for _ in range(300):
                if sleepy.executing:
                    break
                time.sleep(0.01)
            thread.stop()  # returns once the server drained and stopped
            stopped = True
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert b"connection: close" in data
        assert json.loads(data.partition(b"\r\n\r\n")[2])["outputs"][0]["data"] == [5.0]
        assert idle.recv(1) == b""  # idle keep-alive connections were closed
        idle.close()
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        if not stopped:
            thread.__exit__(None, None, None)
