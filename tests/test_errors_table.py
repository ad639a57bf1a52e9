"""The one status table of kernel/_errors.py, walked for both protocols.

Every :class:`~kernel._errors.Status` has an HTTP and a gRPC code; a client's mistakes map to
client codes, only the server's own faults to 5xx / INTERNAL. Then, for every status a request
can meet at this layer, one real request over HTTP (raw, as any client would send it) and one
over gRPC (tritonclient's generated stub) must come back with exactly the table's codes.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from kernel_test_backends.configs import ADDSUB
from tritonclient.grpc import service_pb2, service_pb2_grpc

from kernel._errors import STATUS_TABLE, KernelError, Status, grpc_status, http_status
from kernel.testing import RunningServer, ServerThread, write_model

RAISER = ADDSUB.replace('"addsub"', '"raise"')
LIMIT = 8192

# Statuses no request can meet at the layer these tests drive: UNKNOWN and CANCELLED come from
# plugins and client disconnects (nobody is left to read the answer); the header and URI
# limits are answered by the HTTP/1.1 connection before a request is formed.
MAPPING_ONLY = {Status.UNKNOWN, Status.CANCELLED, Status.HEADERS_TOO_LARGE, Status.URI_TOO_LONG}
SERVER_FAULTS = {Status.INTERNAL, Status.UNAVAILABLE, Status.UNSUPPORTED}
"""The only statuses answered 5xx: our fault, try again later, not implemented here."""


def test_every_status_has_one_code_per_protocol() -> None:
    assert set(STATUS_TABLE) == set(Status)
    names = {code.value[0]: code for code in grpc.StatusCode}
    for status, codes in STATUS_TABLE.items():
        assert (http_status(status), grpc_status(status)) == codes
        assert codes.grpc in names, status
        if status in SERVER_FAULTS:
            assert 500 <= codes.http < 600, status
        else:
            assert 400 <= codes.http < 500, status
    assert http_status(Status.INTERNAL) == 500
    assert names[grpc_status(Status.INTERNAL)] is grpc.StatusCode.INTERNAL
    assert names[grpc_status(Status.FAILED_PRECONDITION)] is grpc.StatusCode.FAILED_PRECONDITION
    for status in (Status.TOO_LARGE, Status.HEADERS_TOO_LARGE, Status.URI_TOO_LONG):
        assert names[grpc_status(status)] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [http_status(s) for s in (Status.TOO_LARGE, Status.HEADERS_TOO_LARGE)] == [413, 431]


def test_wrapped_exceptions_are_the_servers_fault() -> None:
    assert KernelError.wrap(ValueError("boom")).status is Status.INTERNAL
    error = KernelError(Status.NOT_FOUND, "x")
    assert KernelError.wrap(error) is error


# -- one real request per status -----------------------------------------------------------------


@pytest.fixture(scope="module")
def shm_key() -> Iterator[str]:
    key = f"/kernel-errors-{uuid.uuid4().hex}"
    fd = os.open(f"/dev/shm{key}", os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 64)
    finally:
        os.close(fd)
    yield key
    os.unlink(f"/dev/shm{key}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("errors_table")
    write_model(repo, "addsub", ADDSUB)
    write_model(repo, "raiser", RAISER)
    write_model(repo, "flaky", ADDSUB)
    with ServerThread(
        repo,
        metrics_port=None,
        http_max_input_bytes=LIMIT,
        grpc_max_message_bytes=LIMIT,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(served: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _http(
    served: RunningServer, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, Any]:
    host, port = served.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


_F4 = np.ones(4, dtype=np.float32).tobytes()


def _infer(model: str, raw: int = 2) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
    request.raw_input_contents.extend([_F4] * raw)
    return request


_INFER_JSON = json.dumps(
    {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
            for n in ("INPUT0", "INPUT1")
        ]
    }
).encode()

HttpCall = Callable[[RunningServer, str], tuple[int, Any]]
GrpcCall = Callable[[service_pb2_grpc.GRPCInferenceServiceStub, str], Any]


def _register(served: RunningServer, key: str) -> tuple[int, Any]:
    body = json.dumps({"key": key, "offset": 0, "byte_size": 64}).encode()
    path = "/v2/systemsharedmemory/region/twice/register"
    _http(served, "POST", path, body)
    return _http(served, "POST", path, body)


def _register_grpc(stub: service_pb2_grpc.GRPCInferenceServiceStub, key: str) -> None:
    request = service_pb2.SystemSharedMemoryRegisterRequest(
        name="twice-grpc", key=key, offset=0, byte_size=64
    )
    stub.SystemSharedMemoryRegister(request, timeout=30)
    stub.SystemSharedMemoryRegister(request, timeout=30)


def _flaky(served: RunningServer) -> None:
    # The model reports itself unavailable (as a plugin whose process died does).
    served.server.route("flaky").context.set_unavailable("its process went away")


def _log_file_grpc(stub: service_pb2_grpc.GRPCInferenceServiceStub, key: str) -> None:
    request = service_pb2.LogSettingsRequest()
    request.settings["log_file"].string_param = "/tmp/kernel-never-written.log"
    stub.LogSettings(request, timeout=30)


def _too_large_grpc(stub: service_pb2_grpc.GRPCInferenceServiceStub, key: str) -> None:
    request = _infer("addsub")
    request.parameters["padding"].string_param = "x" * LIMIT
    stub.ModelInfer(request, timeout=30)


CASES: dict[Status, tuple[HttpCall, GrpcCall]] = {
    Status.INVALID_ARG: (
        lambda s, k: _http(s, "POST", "/v2/models/addsub/infer", b'{"inputs": 5}'),
        lambda stub, k: stub.ModelInfer(_infer("addsub", raw=3), timeout=30),
    ),
    Status.NOT_FOUND: (
        lambda s, k: _http(s, "GET", "/v2/models/nope"),
        lambda stub, k: stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name="nope"), timeout=30
        ),
    ),
    Status.ALREADY_EXISTS: (_register, _register_grpc),
    Status.UNAVAILABLE: (
        lambda s, k: (_flaky(s), _http(s, "POST", "/v2/models/flaky/infer", _INFER_JSON))[1],
        lambda stub, k: stub.ModelInfer(_infer("flaky"), timeout=30),
    ),
    Status.UNSUPPORTED: (
        lambda s, k: _http(s, "POST", "/v2/logging", b'{"log_file": "/tmp/kernel-never.log"}'),
        _log_file_grpc,
    ),
    Status.INTERNAL: (
        lambda s, k: _http(s, "POST", "/v2/models/raiser/infer", _INFER_JSON),
        lambda stub, k: stub.ModelInfer(_infer("raiser"), timeout=30),
    ),
    Status.FAILED_PRECONDITION: (
        lambda s, k: _http(s, "POST", "/v2/repository/models/addsub/load"),
        lambda stub, k: stub.RepositoryModelLoad(
            service_pb2.RepositoryModelLoadRequest(model_name="addsub"), timeout=30
        ),
    ),
    Status.TOO_LARGE: (
        lambda s, k: _http(
            s,
            "POST",
            "/v2/models/addsub/infer",
            gzip.compress(b" " * LIMIT * 4),
            **{"Content-Encoding": "gzip"},
        ),
        _too_large_grpc,
    ),
}


def test_the_walk_covers_every_status() -> None:
    assert set(CASES) | MAPPING_ONLY == set(Status)
    assert not set(CASES) & MAPPING_ONLY


@pytest.mark.parametrize("status", list(CASES), ids=lambda s: s.name)
def test_a_real_request_per_status(
    served: RunningServer,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    shm_key: str,
    status: Status,
) -> None:
    over_http, over_grpc = CASES[status]
    code, body = over_http(served, shm_key)
    assert code == http_status(status), body
    assert isinstance(body, dict) and body["error"]
    with pytest.raises(grpc.RpcError) as info:
        over_grpc(stub, shm_key)
    assert info.value.code().value[0] == grpc_status(status), info.value.details()
    # and both endpoints go on serving
    assert _http(served, "POST", "/v2/models/addsub/infer", _INFER_JSON)[0] == 200
    assert stub.ModelInfer(_infer("addsub"), timeout=30).model_name == "addsub"


def test_settings_from_the_network_never_touch_files(
    served: RunningServer, stub: service_pb2_grpc.GRPCInferenceServiceStub, tmp_path: Path
) -> None:
    """``log_file`` and ``trace_file`` cannot be set over either protocol (CVE-2024-0087's
    class): refused with Triton's words, nothing created, the settings unchanged."""
    target = tmp_path / "written-by-a-client.log"
    for path, key, message in (
        ("/v2/logging", "log_file", "log file location"),
        ("/v2/trace/setting", "trace_file", "trace file location"),
        ("/v2/models/addsub/trace/setting", "trace_file", "trace file location"),
    ):
        code, body = _http(served, "POST", path, json.dumps({key: str(target)}).encode())
        assert (code, body) == (
            501,
            {"error": f"{message} can not be updated through network protocol"},
        )
    request = service_pb2.TraceSettingRequest()
    request.settings["trace_file"].value.append(str(target))
    with pytest.raises(grpc.RpcError) as info:
        stub.TraceSetting(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "trace file location can not be updated through network protocol"
    with pytest.raises(grpc.RpcError) as info:
        _log_file_grpc(stub, "")
    assert info.value.details() == "log file location can not be updated through network protocol"
    assert not target.exists()
    assert _http(served, "GET", "/v2/logging")[1]["log_file"] == ""
    assert _http(served, "GET", "/v2/trace/setting")[1]["trace_file"] == ""
