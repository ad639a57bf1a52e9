"""Python models over HTTP and gRPC with the real tritonclient, in both execution modes."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from triton_backend_python import metric_text
from tritonclient.utils import InferenceServerException

from kernel.testing import RunningServer

A = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
B = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)


def test_add_sub_http(served: RunningServer, helpers: Any) -> None:
    result = helpers.http_infer(served, "python_add_sub", {"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_add_sub_grpc(served: RunningServer, helpers: Any) -> None:
    result = helpers.grpc_infer(served, "python_add_sub", {"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_requested_output_only(served: RunningServer, helpers: Any) -> None:
    result = helpers.http_infer(
        served,
        "python_add_sub",
        {"INPUT0": A, "INPUT1": B},
        outputs=[httpclient.InferRequestedOutput("OUTPUT1")],
    )
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_large_tensors_cross_shared_memory(served: RunningServer, helpers: Any) -> None:
    # 4 MiB per input: in process mode the tensors travel through shared memory slabs.
    with grpcclient.InferenceServerClient(served.grpc_url) as client:
        config = client.get_model_config("python_echo", as_json=True)["config"]
        assert config["backend"] == "python"
    big = np.arange(1 << 20, dtype=np.float32)
    result = helpers.grpc_infer(served, "python_echo", {"INPUT0": big})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), big + 1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_string_tensors(served: RunningServer, helpers: Any, protocol: str) -> None:
    text = np.array([[b"hello", "wörld".encode(), b""]], dtype=np.object_)
    infer = helpers.http_infer if protocol == "http" else helpers.grpc_infer
    result = infer(served, "python_strings", {"TEXT": text})
    assert result.as_numpy("UPPER").tolist() == [[b"HELLO", "WÖRLD".encode(), b""]]
    assert result.as_numpy("LENGTH").tolist() == [[5, 6, 0]]


def test_request_metadata_and_args(served: RunningServer, helpers: Any) -> None:
    result = helpers.grpc_infer(
        served,
        "python_echo",
        {"INPUT0": A},
        request_id="req-7",
        parameters={"temperature": 0.5, "mode": "fast", "n": 3, "on": True},
    )
    seen = json.loads(result.as_numpy("REQUEST")[0])
    assert seen["request_id"] == "req-7"
    assert seen["correlation_id"] == 0
    assert seen["flags"] == 0
    assert seen["parameters"] == {"temperature": 0.5, "mode": "fast", "n": 3, "on": True}
    assert seen["requested_output_names"] == ["ARGS", "OUTPUT0", "REQUEST"]
    assert seen["inputs"] == ["INPUT0"]
    assert seen["is_cancelled"] is False
    # The input array the model modified in place was its own copy.
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + 1)

    args = json.loads(result.as_numpy("ARGS")[0])
    assert args["model_name"] == "python_echo"
    assert args["model_version"] == "1"
    assert args["model_instance_kind"] == "CPU"
    assert args["model_instance_device_id"] == "0"
    assert args["model_instance_name"] == "python_echo_0_0"
    assert args["model_repository"].endswith("/python_echo")
    config = args["model_config"]
    assert config["name"] == "python_echo"
    assert config["input"][0]["dims"] == [-1]  # 64-bit integers are JSON numbers, as in Triton
    assert config["parameters"] == {"custom_key": {"string_value": "custom_value"}}


def test_response_parameters(served: RunningServer, helpers: Any) -> None:
    result = helpers.grpc_infer(served, "python_echo", {"INPUT0": A})
    assert result.get_response().parameters["echoed"].bool_param is True


def test_instances_have_their_own_module(served: RunningServer, helpers: Any) -> None:
    names = set()
    for _ in range(8):
        result = helpers.http_infer(served, "python_globals", {"INPUT0": A[:1]})
        assert result.as_numpy("SEEN").tolist() == [1]
        names.add(result.as_numpy("INSTANCE")[0])
    assert names <= {b"python_globals_0_0", b"python_globals_0_1"}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_execute_that_raises(served: RunningServer, helpers: Any, protocol: str) -> None:
    infer = helpers.http_infer if protocol == "http" else helpers.grpc_infer
    with pytest.raises(InferenceServerException) as raised:
        infer(served, "python_raise", {"INPUT0": -A})
    message = raised.value.message()
    assert "Failed to process the request(s) for model 'python_raise_0_0'" in message
    assert "ValueError: negative input is not allowed" in message
    # The model keeps serving.
    result = infer(served, "python_raise", {"INPUT0": A})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A)


def test_triton_error_response(served: RunningServer, helpers: Any) -> None:
    with pytest.raises(InferenceServerException) as raised:
        helpers.http_infer(served, "python_raise", {"INPUT0": np.zeros(2, np.float32)})
    assert "zero is not a valid input" in raised.value.message()
    assert raised.value.status() == "400"  # INVALID_ARG


def test_wrong_number_of_responses(served: RunningServer, helpers: Any) -> None:
    with pytest.raises(InferenceServerException) as raised:
        helpers.grpc_infer(served, "python_wrong_count", {"INPUT0": A})
    assert (
        "Number of InferenceResponse objects do not match the number of InferenceRequest"
        " objects. InferenceRequest(s) size is:1, and InferenceResponse(s) size is:2"
    ) in raised.value.message()


def test_model_without_config_uses_auto_complete(served: RunningServer, helpers: Any) -> None:
    with httpclient.InferenceServerClient(served.http_url) as client:
        config = client.get_model_config("python_auto_complete")
        metadata = client.get_model_metadata("python_auto_complete")
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 8
    assert [t["name"] for t in config["input"]] == ["INPUT0", "INPUT1"]
    assert "dynamic_batching" in config
    assert metadata["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}
    batch = np.stack([A, B])
    result = helpers.http_infer(served, "python_auto_complete", {"INPUT0": batch, "INPUT1": batch})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), batch + batch)


def test_custom_metrics_and_logging(
    served: RunningServer, helpers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kernel.model.python_metrics"):
        for _ in range(3):
            result = helpers.http_infer(served, "python_metrics", {"INPUT0": A})
    assert result.as_numpy("OUTPUT0")[0] >= 3
    assert any("requests so far:" in r.getMessage() for r in caplog.records)
    text = metric_text(served.server)
    assert "# TYPE requests_seen_total counter" in text
    assert 'requests_seen_total{model="python_metrics",version="1"}' in text
    assert 'last_input_size{model="python_metrics",version="1"} 4' in text
    assert "# TYPE input_sum histogram" in text
    assert 'input_sum_bucket{model="python_metrics",version="1",le="10"}' in text
    with urllib.request.urlopen(f"http://{served.metrics_url}/metrics", timeout=30) as reply:
        scraped = reply.read().decode()
    assert 'requests_seen_total{model="python_metrics",version="1"}' in scraped
