"""The protocol-neutral frontend API and what it guards, through both real clients.

One routing per request (``server.prepare``); neither frontend imports ``kernel._models``;
classification labels follow a reload; model names are validated on every route that takes
one; a load's files stay in their folder; shared-memory keys name only shared-memory objects;
request parameters and settings follow one set of rules on both protocols.
"""

from __future__ import annotations

import ast
import http.client as http_client
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import kernel.frontends
from kernel import ModelControlMode
from kernel.testing import RunningServer, ServerThread, write_model

CLASSIFIER = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""
IDENTITY_CONFIG = {
    "backend": "kerneltest",
    "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
    "parameters": {"behaviour": {"string_value": "identity"}},
}
VALUES = np.array([0, 1, 9, 2], dtype=np.float32)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RunningServer]:
    write_model(tmp_path, "classifier", CLASSIFIER, files={"labels.txt": b"a\nb\nc\nd\n"})
    with ServerThread(
        tmp_path,
        metrics_port=None,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["classifier"],
    ) as srv:
        yield srv


@pytest.fixture
def http(served: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(served.http_url) as client:
        yield client


@pytest.fixture
def grpc_client(served: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(served.grpc_url)
    yield client
    client.close()


def _top1_http(client: httpclient.InferenceServerClient, model: str = "classifier") -> bytes:
    tensor = httpclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(VALUES)
    output = httpclient.InferRequestedOutput("OUTPUT0", class_count=1)
    result = client.infer(model, [tensor], outputs=[output]).as_numpy("OUTPUT0")
    assert result is not None
    return bytes(result[0])


def _top1_grpc(client: grpcclient.InferenceServerClient, model: str = "classifier") -> bytes:
    tensor = grpcclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(VALUES)
    output = grpcclient.InferRequestedOutput("OUTPUT0", class_count=1)
    result = client.infer(model, [tensor], outputs=[output]).as_numpy("OUTPUT0")
    assert result is not None
    return bytes(result[0])


def _post(
    served: RunningServer, path: str, body: bytes | None, method: str = "POST"
) -> tuple[int, Any]:
    host, port = served.http_url.split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# -- one API under both frontends --------------------------------------------------------------


def test_no_frontend_imports_the_model_internals() -> None:
    root = Path(kernel.frontends.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(
                n == "kernel._models" or n.startswith("kernel._models.") for n in names
            ), path


def test_each_request_is_routed_once(
    served: RunningServer,
    http: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = served.server.manager
    calls: list[str] = []
    route = manager.route

    def counting(name: str, version: int = -1) -> Any:
        calls.append(name)
        return route(name, version)

    monkeypatch.setattr(manager, "route", counting)
    _top1_http(http)
    assert calls == ["classifier"]
    _top1_grpc(grpc_client)
    assert calls == ["classifier", "classifier"]


def test_classification_labels_follow_a_reload(
    served: RunningServer,
    http: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    assert _top1_http(http) == _top1_grpc(grpc_client) == b"9.000000:2:c"
    labels = served.server.route("classifier").context.model_dir / "labels.txt"
    labels.write_text("w\nx\ny\nz\n")
    assert _top1_grpc(grpc_client) == b"9.000000:2:c"  # read once per loaded version
    grpc_client.load_model("classifier")
    assert _top1_http(http) == _top1_grpc(grpc_client) == b"9.000000:2:y"


def test_labels_never_come_from_outside_the_model_folder(
    http: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """A load's config comes from the network: its label file cannot name other files."""
    config = json.loads(json.dumps(IDENTITY_CONFIG))
    config["output"][0]["label_filename"] = "../../../../../../../../etc/hostname"
    http.load_model("peek", config=json.dumps(config), files={"file:1/notes": b"x"})
    assert _top1_http(http, "peek") == _top1_grpc(grpc_client, "peek") == b"9.000000:2"


# -- model names -------------------------------------------------------------------------------

BAD_NAMES = ["..", "../classifier", "a/b", "a\\b", "x\x01y", "x\ny"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_model_names_over_http(served: RunningServer, name: str) -> None:
    quoted = quote(name, safe="")
    routes = [
        ("POST", f"/v2/models/{quoted}/infer", b"{}"),
        ("GET", f"/v2/models/{quoted}", None),
        ("GET", f"/v2/models/{quoted}/config", None),
        ("GET", f"/v2/models/{quoted}/stats", None),
        ("GET", f"/v2/models/{quoted}/ready", None),
        ("POST", f"/v2/repository/models/{quoted}/load", b"{}"),
        ("POST", f"/v2/repository/models/{quoted}/unload", b"{}"),
    ]
    for method, path, body in routes:
        status, answer = _post(served, path, body, method)
        assert status == 400, (path, answer)
        assert answer["error"].startswith("Invalid model name '"), (path, answer)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_model_names_over_grpc(served: RunningServer, name: str) -> None:
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        calls = [
            lambda: stub.ModelInfer(service_pb2.ModelInferRequest(model_name=name), timeout=30),
            lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name), timeout=30),
            lambda: stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=30),
            lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=name), timeout=30),
            lambda: stub.ModelReady(service_pb2.ModelReadyRequest(name=name), timeout=30),
            lambda: stub.RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name=name), timeout=30
            ),
            lambda: stub.RepositoryModelUnload(
                service_pb2.RepositoryModelUnloadRequest(model_name=name), timeout=30
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith("Invalid model name '")


def test_names_with_dots_inside_a_name_are_no_path(http: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        http.get_model_metadata("a.b")
    assert info.value.status() == "404"


# -- a load's files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../escape", "/etc/escape", "1/../../escape", "1/./x", "", "1//x", "a\\b", "1/x\x00"],
    ids=repr,
)
def test_load_files_stay_in_their_folder(
    http: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
    tmp_path: Path,
    path: str,
) -> None:
    config = json.dumps(IDENTITY_CONFIG)
    for client in (http, grpc_client):
        with pytest.raises(InferenceServerException) as info:
            client.load_model("virtual", config=config, files={f"file:{path}": b"x"})
        assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
        assert "is not a relative path inside the model folder" in (info.value.message() or "")
    assert not (tmp_path / "escape").exists()
    assert not Path("/etc/escape").exists()


def test_load_files_that_clash_are_refused(http: httpclient.InferenceServerClient) -> None:
    config = json.dumps(IDENTITY_CONFIG)
    with pytest.raises(InferenceServerException) as info:
        http.load_model("virtual", config=config, files={"file:1/a": b"x", "file:1/a/b": b"y"})
    assert info.value.status() == "400"
    http.load_model("virtual", config=config, files={"file:1/a/b": b"y", "file:1/c": b"z"})
    assert http.is_model_ready("virtual")


# -- shared-memory keys --------------------------------------------------------------------------


@pytest.fixture
def shm_objects() -> Iterator[dict[str, str]]:
    """A real object, a folder and a symbolic link to the object, all in /dev/shm."""
    tag = uuid.uuid4().hex
    real, folder, link = (f"/kernel-{kind}-{tag}" for kind in ("real", "dir", "link"))
    fd = os.open(f"/dev/shm{real}", os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    os.ftruncate(fd, 64)
    os.close(fd)
    os.mkdir(f"/dev/shm{folder}")
    os.symlink(f"/dev/shm{real}", f"/dev/shm{link}")
    yield {"real": real, "dir": folder, "link": link}
    os.unlink(f"/dev/shm{link}")
    os.rmdir(f"/dev/shm{folder}")
    os.unlink(f"/dev/shm{real}")


def test_shared_memory_registration_refusals(
    http: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
    shm_objects: dict[str, str],
) -> None:
    real = shm_objects["real"]
    cases = [
        (shm_objects["dir"], 0, 64, "is not a shared memory object"),
        (shm_objects["link"], 0, 64, "is not a shared memory object"),
        ("/..", 0, 64, "bad key"),
        ("/a/b", 0, 64, "bad key"),
        ("", 0, 64, "bad key"),
        ("/k\x01", 0, 64, "bad key"),
        (real, 0, 65, "exceeds the 64 bytes"),
        (real, 60, 8, "exceeds the 64 bytes"),
        (real, 0, 0, "invalid offset 0 or byte size 0"),
        (real, 2**63, 8, "exceeds the 64 bytes"),
    ]
    for key, offset, size, message in cases:
        with pytest.raises(InferenceServerException) as info:
            http.register_system_shared_memory("r", key, size, offset)
        assert info.value.status() == "400", (key, info.value.message())
        assert message in (info.value.message() or ""), key
        with pytest.raises(InferenceServerException) as info:
            grpc_client.register_system_shared_memory("r", key, size, offset)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT", key
        assert message in (info.value.message() or ""), key
    # the one refusal kept at 500 / INTERNAL, as clients test for it
    with pytest.raises(InferenceServerException) as info:
        http.register_system_shared_memory("r", "/kernel-no-such-key", 64)
    assert info.value.status() == "500"
    assert "Unable to open shared memory region: '/kernel-no-such-key'" in info.value.message()
    http.register_system_shared_memory("r", real, 64)
    assert [r["name"] for r in http.get_system_shared_memory_status()] == ["r"]
    http.unregister_system_shared_memory()


# -- one set of rules for parameters and settings ---------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "http_message", "grpc_message"),
    [
        ({"priority": -1}, "Unable to parse 'priority': attempt to access JSON"
         " non-unsigned-integer as unsigned-integer",
         "invalid value type for 'priority' parameter, expected int64_param or uint64_param."),
        ({"timeout": -5}, "Unable to parse 'timeout': attempt to access JSON"
         " non-unsigned-integer as unsigned-integer",
         "invalid value type for 'timeout' parameter, expected int64_param or uint64_param."),
        ({"sequence_start": 1}, "Unable to parse 'sequence_start': attempt to access JSON"
         " non-boolean as boolean",
         "invalid value type for 'sequence_start' parameter, expected bool_param."),
        ({"triton_other": True}, "parameter keys starting with 'triton_' are reserved for"
         " Triton usage and should not be specified.",
         "parameter keys starting with 'triton_' are reserved for Triton usage. Only the"
         " following keys starting with 'triton_' are allowed:"
         " triton_enable_empty_final_response"),
    ],
)  # fmt: skip
def test_request_parameters_follow_one_set_of_rules(
    served: RunningServer,
    grpc_client: grpcclient.InferenceServerClient,
    parameters: dict[str, Any],
    http_message: str,
    grpc_message: str,
) -> None:
    # raw HTTP: tritonclient refuses Triton's reserved keys itself, before sending
    body = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [0, 1, 9, 2]}],
        "parameters": parameters,
    }
    status, answer = _post(served, "/v2/models/classifier/infer", json.dumps(body).encode())
    assert (status, answer) == (400, {"error": http_message})
    # the generated stub: tritonclient refuses those keys before sending here too
    request = service_pb2.ModelInferRequest(model_name="classifier")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    request.raw_input_contents.append(VALUES.tobytes())
    for key, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        else:
            request.parameters[key].int64_param = value
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == grpc_message


def test_trace_settings_follow_one_set_of_rules(
    http: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    message = "Attempting to set invalid trace setting :unsupported trace level 'LOUD'"
    with pytest.raises(InferenceServerException) as info:
        http.update_trace_settings(settings={"trace_level": ["LOUD"]})
    assert (info.value.status(), info.value.message()) == ("400", message)
    with pytest.raises(InferenceServerException) as info:
        grpc_client.update_trace_settings(settings={"trace_level": ["LOUD"]})
    assert info.value.message() == message
    message = "Unable to parse 'trace_rate', value is out of range [ 0, 4294967295 ], got: -1"
    with pytest.raises(InferenceServerException) as info:
        http.update_trace_settings(settings={"trace_rate": "-1"})
    assert info.value.message() == message
    with pytest.raises(InferenceServerException) as info:
        grpc_client.update_trace_settings(settings={"trace_rate": "-1"})
    assert info.value.message() == message
    assert http.get_trace_settings()["trace_level"] == ["OFF"]


def test_settings_map_entries_without_a_value(served: RunningServer) -> None:
    """A protobuf map entry may leave its value out (the empty message): a trace setting is
    cleared, a log setting has no kind (both crashed the handler once)."""
    with grpc.insecure_channel(served.grpc_url) as channel:
        trace = channel.unary_unary(
            "/inference.GRPCInferenceService/TraceSetting",
            response_deserializer=service_pb2.TraceSettingResponse.FromString,
        )
        answer = trace(b"\n\x0c\n\ntrace_rate", timeout=30)
        assert list(answer.settings["trace_rate"].value) == ["1000"]
        # a value, or a string in it, sent with another wire type is an unknown field to
        # protobuf: the entry reads as an empty value (betterproto2 alone read ints there)
        for data in (b"\n\x0e\n\ntrace_rate\x10\x05", b"\n\x10\n\ntrace_rate\x12\x02\x08\x05"):
            answer = trace(data, timeout=30)
            assert list(answer.settings["trace_rate"].value) == ["1000"]
        logs = channel.unary_unary("/inference.GRPCInferenceService/LogSettings")
        with pytest.raises(grpc.RpcError) as info:
            logs(b"\n\n\n\x08log_info", timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "expect boolean for 'log_info'"
        load = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad")
        with pytest.raises(grpc.RpcError) as info:
            # model_name "classifier", parameters {"config": <no value>}
            load(b"\x12\nclassifier\x1a\x08\n\x06config", timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == (
            "invalid value type for load parameter 'config', expected string_param."
        )


@pytest.mark.parametrize("name", ["a/b", ".."])
def test_bad_names_with_load_files_touch_nothing(
    grpc_client: grpcclient.InferenceServerClient, name: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        grpc_client.load_model(name, config=json.dumps(IDENTITY_CONFIG), files={"file:1/x": b"x"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert (info.value.message() or "").startswith("Invalid model name '")
