"""Today's tritonserver command line: each flag it takes that has a meaning here, with that
meaning (checked against tritonserver 2.51 where it has the flag)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kernel._cli import build_parser
from kernel._errors import KernelError
from kernel._ignored_flags import NO_OP_FLAGS, report_ignored_flags
from kernel._options import ServerOptions
from kernel._serve_command import options_from_args
from kernel.frontends._access import HeaderForwarding, merge_restrictions, parse_restriction
from kernel.testing import ServerThread, run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def _options(*flags: str) -> ServerOptions:
    return options_from_args(build_parser().parse_args(["serve", *flags]))


def _http(url: str, method: str, path: str, headers: dict[str, str] | None = None) -> tuple:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.getheader("content-type"), reply.read()
    finally:
        conn.close()


# -- addresses and ports ---------------------------------------------------------------------


def test_every_endpoint_listens_on_all_interfaces_by_default() -> None:
    options = _options()
    assert [options.address(e) for e in ("http", "grpc", "metrics")] == ["0.0.0.0"] * 3


def test_each_endpoint_has_its_own_address_and_metrics_follows_http() -> None:
    options = _options("--http-address=127.0.0.2", "--grpc-address=127.0.0.3")
    assert options.address("http") == "127.0.0.2"
    assert options.address("grpc") == "127.0.0.3"
    assert options.address("metrics") == "127.0.0.2"  # tritonserver: same as --http-address
    options = _options("--host=127.0.0.1", "--metrics-address=127.0.0.4")
    assert [options.address(e) for e in ("http", "grpc", "metrics")] == [
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.4",
    ]


def test_endpoints_bind_their_own_addresses(repo: Path) -> None:
    addresses = {"http_address": "127.0.0.2", "grpc_address": "127.0.0.3"}
    with ServerThread(repo, **addresses) as srv:
        assert srv.http_url.startswith("127.0.0.2:")
        assert srv.grpc_url.startswith("127.0.0.3:")
        assert srv.metrics_url.startswith("127.0.0.2:")
        assert _http(srv.http_url, "GET", "/v2/health/live")[0] == 200
        assert _http(srv.metrics_url, "GET", "/metrics")[0] == 200
        assert grpcclient.InferenceServerClient(srv.grpc_url).is_server_live()
        port = int(srv.grpc_url.rsplit(":", 1)[1])
        with pytest.raises(OSError):  # not on another loopback address
            socket.create_connection(("127.0.0.2", port), timeout=10).close()


async def test_reuse_port_lets_two_servers_share_the_http_port(repo: Path) -> None:
    async with run_server(repo, reuse_http_port=True, grpc_port=None, metrics_port=None) as one:
        port = one.server.ports["http"]
        shared = {"http_port": port, "grpc_port": None, "metrics_port": None}
        async with run_server(repo, reuse_http_port=True, **shared) as two:
            assert two.server.ports["http"] == port
        plain = socket.socket()  # a listener without SO_REUSEPORT cannot share it
        try:
            with pytest.raises(OSError):
                plain.bind(("127.0.0.1", port))
        finally:
            plain.close()
    assert _options("--reuse-http-port=true", "--reuse-grpc-port=1").reuse_grpc_port


# -- server identity, model loading ----------------------------------------------------------


def test_id_is_the_server_name_metadata_reports() -> None:
    assert _options("--id=edge-7").server_name == "edge-7"


async def test_model_config_name_picks_the_custom_config(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    folder = add_model(repo, "m", kt_config("identity", max_batch_size=8))
    (folder / "configs").mkdir()
    (folder / "configs" / "h100.pbtxt").write_text(kt_config("identity", max_batch_size=2))
    add_model(repo, "plain", kt_config("identity", max_batch_size=8))
    async with run_server(repo, model_config_name="h100", **NO_ENDPOINTS) as srv:
        assert srv.server.model_config("m").max_batch_size == 2
        assert srv.server.model_config("plain").max_batch_size == 8  # no configs/h100.pbtxt
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert srv.server.model_config("m").max_batch_size == 8
    assert _options("--model-config-name=h100").model_config_name == "h100"
    with pytest.raises(ValueError, match="space"):
        _options("--model-config-name=a b")


async def test_model_load_retry_count_retries_a_failed_load(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    def config(token: str) -> str:
        params = {"fail_instance_init_times": "2", "init_token": token}
        return kt_config("identity", parameters=params)

    add_model(repo, "m", config("retry-enough"))
    async with run_server(repo, model_load_retry_count=2, **NO_ENDPOINTS) as srv:
        assert srv.server.is_model_ready("m")
    add_model(repo, "m", config("retry-short"))
    async with run_server(repo, model_load_retry_count=1, **NO_ENDPOINTS) as srv:
        assert not srv.server.is_model_ready("m")
        [row] = [r for r in srv.server.repository_index() if r.name == "m"]
        assert "fails init 2" in row.reason
    assert _options("--model-load-retry-count=3").model_load_retry_count == 3


def test_model_namespacing_true_is_refused_false_accepted() -> None:
    _options("--model-namespacing=false")
    with pytest.raises(ValueError, match="--model-namespacing=true is not supported"):
        _options("--model-namespacing=true")


def test_metrics_interval_is_kept() -> None:
    assert _options("--metrics-interval-ms=500").metrics_interval_ms == 500.0


def test_tuning_flags_are_accepted_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    flags = [f"{flag}=4" for flag in NO_OP_FLAGS]
    args = build_parser().parse_args(
        ["serve", *flags, "--grpc-infer-response-compression-level=high"]
    )
    with caplog.at_level(logging.INFO, logger="kernel.serve"):
        report_ignored_flags(args)
    for flag in NO_OP_FLAGS:
        assert f"{flag}=4 accepted and ignored: {NO_OP_FLAGS[flag]}" in caplog.text
    assert "gRPC responses are sent uncompressed" in caplog.text


# -- restricted APIs -------------------------------------------------------------------------


def test_restriction_flags_parse_as_tritonserver() -> None:
    assert parse_restriction("health,inference:infer-key=v") == (
        ("health", "inference"),
        "infer-key",
        "v",
    )
    with pytest.raises(ValueError, match="unknown restricted API 'admin'"):
        parse_restriction("admin:k=v")
    with pytest.raises(ValueError, match="expected"):
        parse_restriction("health")
    with pytest.raises(ValueError, match="'health' is restricted more than once"):
        merge_restrictions([(("health",), "a", "1"), (("health",), "b", "2")], "--flag")
    options = _options(
        "--http-restricted-api=model-repository,statistics:admin-key=s3cret",
        "--grpc-restricted-protocol=inference:infer-key=v",
    )
    assert options.http_restricted_api == {
        "model-repository": ("admin-key", "s3cret"),
        "statistics": ("admin-key", "s3cret"),
    }
    assert options.grpc_restricted_protocol == {"inference": ("infer-key", "v")}


def test_http_restricted_api_needs_the_header(repo: Path) -> None:
    restricted = {
        "health": ("admin-key", "v1"),
        "model-repository": ("admin-key", "v1"),
        "statistics": ("admin-key", "v1"),
    }
    with ServerThread(repo, http_restricted_api=restricted) as srv:
        url = srv.http_url
        expected = b'{"error":"This API is restricted, expecting header \'admin-key\'"}'
        for method, path in (
            ("GET", "/v2/health/ready"),
            ("GET", "/v2/models/x/ready"),  # model readiness is in the health group
            ("POST", "/v2/repository/index"),
            ("GET", "/v2/models/stats"),
        ):
            # as tritonserver 2.51: 403, text/plain, Triton's message
            assert _http(url, method, path) == (403, "text/plain", expected), path
            wrong = _http(url, method, path, {"admin-key": "v2"})
            assert wrong[0] == 403, path
            assert _http(url, method, path, {"admin-key": "v1"})[0] != 403, path
        assert _http(url, "GET", "/v2")[0] == 200  # metadata is not restricted
        client = httpclient.InferenceServerClient(url)
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.get_model_repository_index()
        assert client.get_model_repository_index(headers={"admin-key": "v1"}) == []


def test_grpc_restricted_protocol_needs_the_prefixed_header(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("identity"))
    restricted = {"health": ("admin-key", "v1"), "inference": ("infer-key", "i1")}
    with ServerThread(repo, grpc_restricted_protocol=restricted) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException) as refused:
            client.is_server_ready()
        # as tritonserver 2.51
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert refused.value.message() == (
            "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
        )
        assert client.is_server_ready(headers={"triton-grpc-protocol-admin-key": "v1"})
        assert client.get_server_metadata().name == "triton"  # unrestricted
        data = np.ones((1, 4), np.float32)
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = grpcclient.InferInput(name, [1, 4], "FP32")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException, match="triton-grpc-protocol-infer-key"):
            client.infer("m", inputs)
        result = client.infer("m", inputs, headers={"triton-grpc-protocol-infer-key": "i1"})
        assert np.array_equal(result.as_numpy("OUTPUT0"), data)
        # the standard grpc.health.v1 service is in the health group too
        with grpc.insecure_channel(srv.grpc_url) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=bytes,
                response_deserializer=bytes,
            )
            with pytest.raises(grpc.RpcError) as health_refused:
                check(b"", timeout=30)
            assert health_refused.value.code() == grpc.StatusCode.UNAVAILABLE
            metadata = (("triton-grpc-protocol-admin-key", "v1"),)
            assert check(b"", metadata=metadata, timeout=30) == b"\x08\x01"  # SERVING


# -- header forwarding -----------------------------------------------------------------------


def test_forward_pattern_matches_case_insensitively_unless_told() -> None:
    forwarding = HeaderForwarding.compile("MY_HEADER.*", "--flag")
    assert forwarding is not None
    params: dict[str, object] = {"my_header_2": "from the request"}
    headers = [("my_header_1", "a"), ("my_header_2", "b"), ("other", "c"), (":path", "/x")]
    forwarding.forward(headers, params)  # type: ignore[arg-type]
    assert params == {"my_header_1": "a", "my_header_2": "from the request"}
    strict = HeaderForwarding.compile("(?-i)MY_HEADER.*", "--flag")
    assert strict is not None
    params = {}
    strict.forward([("my_header_1", "a")], params)  # type: ignore[arg-type]
    assert params == {}
    assert HeaderForwarding.compile("", "--flag") is None
    with pytest.raises(ValueError, match="invalid regular expression"):
        HeaderForwarding.compile("(", "--flag")
    everything = HeaderForwarding.compile(".*", "--flag")
    assert everything is not None
    with pytest.raises(KernelError, match="reserved"):
        everything.forward([("sequence_id", "1")], {})


def test_matching_headers_reach_the_model_as_parameters(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("identity"))
    patterns = {
        "http_header_forward_pattern": "my_header.*",
        "grpc_header_forward_pattern": "my_header.*",
    }
    headers = {"my_header_1": "my_value_1", "my_header_2": 'a "quoted" one', "header_3": "no"}
    expected = {"my_header_1": "my_value_1", "my_header_2": 'a "quoted" one'}
    data = np.ones((1, 4), np.float32)
    with ServerThread(repo, **patterns) as srv:
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = httpclient.InferInput(name, [1, 4], "FP32")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        client = httpclient.InferenceServerClient(srv.http_url)
        result = client.infer("m", inputs, headers=dict(headers))
        assert result.get_response()["parameters"] == expected
        grpc_inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = grpcclient.InferInput(name, [1, 4], "FP32")
            tensor.set_data_from_numpy(data)
            grpc_inputs.append(tensor)
        gclient = grpcclient.InferenceServerClient(srv.grpc_url)
        response = gclient.infer("m", grpc_inputs, headers=dict(headers)).get_response(as_json=True)
        got = {k: v["string_param"] for k, v in response["parameters"].items()}
        assert got == expected
    with ServerThread(repo) as srv:  # no pattern: nothing forwarded
        client = httpclient.InferenceServerClient(srv.http_url)
        result = client.infer("m", inputs, headers=dict(headers))
        assert "parameters" not in result.get_response()


# -- client shared memory --------------------------------------------------------------------


def test_allow_client_shm_false_refuses_the_shared_memory_apis(repo: Path) -> None:
    assert _options().allow_client_shm
    assert not _options("--allow-client-shm=false").allow_client_shm
    with ServerThread(repo, allow_client_shm=False) as srv:
        status, _, body = _http(srv.http_url, "GET", "/v2/systemsharedmemory/status")
        assert status == 501
        assert "--allow-client-shm=false" in json.loads(body)["error"]
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException, match="--allow-client-shm=false"):
            client.register_system_shared_memory("r", "/kernel-test-shm", 64)
        with pytest.raises(InferenceServerException, match="--allow-client-shm=false"):
            client.get_cuda_shared_memory_status()
    with ServerThread(repo) as srv:
        assert _http(srv.http_url, "GET", "/v2/systemsharedmemory/status")[0] == 200
