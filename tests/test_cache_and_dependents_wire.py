"""Response-cache statistics and metrics, and ``unload_dependents``, over both protocols with
the real tritonclient (the server-side behaviour is tested in test_response_cache.py and
test_ensemble_limits.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from kernel import ModelControlMode
from kernel.testing import ServerThread, write_model

CACHE = {"cache_config": {"local": {"size": str(1 << 20)}}}

STEP = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""

ENSEMBLE = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "B" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [ { model_name: "step" model_version: -1
  input_map { key: "INPUT0" value: "A" } output_map { key: "OUTPUT0" value: "B" } } ] }
"""


def _inputs(module: object, value: float) -> list[object]:
    data = np.full((1, 4), value, np.float32)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = module.InferInput(name, [1, 4], "FP32")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def test_cache_hits_reach_statistics_and_metrics_on_both_protocols(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("identity", extra="response_cache { enable: true }"))
    with ServerThread(repo, **CACHE) as srv:
        http = httpclient.InferenceServerClient(srv.http_url)
        grpc = grpcclient.InferenceServerClient(srv.grpc_url)
        for value in (1.0, 1.0, 2.0, 1.0):
            result = http.infer("m", _inputs(httpclient, value))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), value))
        grpc.infer("m", _inputs(grpcclient, 2.0))  # a hit over gRPC too
        stats = http.get_inference_statistics("m")["model_stats"][0]["inference_stats"]
        assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (3, 2)
        assert stats["cache_hit"]["ns"] > 0
        proto = grpc.get_inference_statistics("m").model_stats[0].inference_stats
        assert (proto.cache_hit.count, proto.cache_miss.count) == (3, 2)
        with urllib.request.urlopen(f"http://{srv.metrics_url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        assert 'nv_cache_num_hits_per_model{model="m",version="1"} 3' in text
        assert 'nv_cache_num_misses_per_model{model="m",version="1"} 2' in text
        http.close()
        grpc.close()


def test_no_cache_families_without_a_cache(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("identity"))
    with (
        ServerThread(repo) as srv,
        urllib.request.urlopen(f"http://{srv.metrics_url}/metrics", timeout=10) as reply,
    ):
        assert "nv_cache_" not in reply.read().decode()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("dependents", [False, True])
def test_unload_dependents_over_the_wire(repo: Path, protocol: str, dependents: bool) -> None:
    write_model(repo, "step", STEP)
    write_model(repo, "ens", ENSEMBLE)
    with ServerThread(repo, model_control_mode=ModelControlMode.EXPLICIT) as srv:
        module = httpclient if protocol == "http" else grpcclient
        url = srv.http_url if protocol == "http" else srv.grpc_url
        client = module.InferenceServerClient(url)  # type: ignore[attr-defined]
        client.load_model("ens")
        assert client.is_model_ready("step")
        client.unload_model("ens", unload_dependents=dependents)
        assert not client.is_model_ready("ens")
        assert client.is_model_ready("step") is not dependents
        client.close()


def test_unload_dependents_of_the_wrong_type_is_a_client_error(repo: Path) -> None:
    write_model(repo, "step", STEP)
    with ServerThread(repo, model_control_mode=ModelControlMode.EXPLICIT) as srv:
        request = urllib.request.Request(
            f"http://{srv.http_url}/v2/repository/models/step/unload",
            data=b'{"parameters": {"unload_dependents": "yes"}}',
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 400
        caught.value.close()  # its response holds the socket
        channel = grpc.insecure_channel(srv.grpc_url)
        unload = channel.unary_unary(
            "/inference.GRPCInferenceService/RepositoryModelUnload",
            request_serializer=service_pb2.RepositoryModelUnloadRequest.SerializeToString,
            response_deserializer=service_pb2.RepositoryModelUnloadResponse.FromString,
        )
        wrong = service_pb2.ModelRepositoryParameter(string_param="yes")
        with pytest.raises(grpc.RpcError) as rpc_error:
            unload(
                service_pb2.RepositoryModelUnloadRequest(
                    model_name="step", parameters={"unload_dependents": wrong}
                ),
                timeout=10,
            )
        assert rpc_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unload_dependents" in (rpc_error.value.details() or "")
        channel.close()
