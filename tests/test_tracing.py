"""Triton-mode traces: ``--trace-config``, the trace settings API, Triton's JSON trace files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel._cli import build_parser
from kernel._serve_command import options_from_args
from kernel._trace_settings import TRACE_DEFAULTS
from kernel._tracing import _Sampler, tensor_json
from kernel.testing import ServerThread, write_model

from .test_scheduling_ensemble import add_models, pair

ORDER = [
    "REQUEST_START",
    "QUEUE_START",
    "COMPUTE_START",
    "COMPUTE_INPUT_END",
    "COMPUTE_OUTPUT_START",
    "COMPUTE_END",
    "REQUEST_END",
]


def _settings(**changes: str | list[str]) -> dict[str, list[str]]:
    settings = {k: list(v) for k, v in TRACE_DEFAULTS.items()}
    for key, value in changes.items():
        settings[key] = [value] if isinstance(value, str) else value
    return settings


def _traces(objects: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Trace id -> {"head": the model object, "events": [names in file order], "tensors": ...}."""
    traces: dict[int, dict[str, Any]] = {}
    for obj in objects:
        trace = traces.setdefault(obj["id"], {"head": None, "events": [], "tensors": []})
        if "model_name" in obj:
            trace["head"] = obj
        elif "timestamps" in obj:
            assert len(obj["timestamps"]) == 1
            stamp = obj["timestamps"][0]
            assert set(stamp) == {"name", "ns"} and isinstance(stamp["ns"], int)
            trace["events"].append(stamp["name"])
            trace.setdefault("ns", []).append(stamp["ns"])
        else:
            assert set(obj) == {"id", "activity", "tensor"}
            trace["tensors"].append((obj["activity"], obj["tensor"]))
    return traces


def test_tensor_json_is_tritons_strings() -> None:
    assert tensor_json("IN", np.array([1.5, 2.0], np.float32)) == {
        "name": "IN",
        "data": "1.5,2",
        "shape": "2",
        "dtype": "FP32",
    }
    assert tensor_json("X", np.arange(4, dtype=np.int64).reshape(2, 2))["shape"] == "2,2"
    text = tensor_json("S", np.array([b"ab", b"c"], dtype=object))
    assert text["data"] == "ab,c" and text["dtype"] == "BYTES"


def test_sampler_takes_every_rate_th_request_until_count_runs_out() -> None:
    sampler = _Sampler(_settings(trace_level=["TIMESTAMPS"], trace_rate="3", trace_count="2"))
    picks = [sampler.sample() for _ in range(12)]
    assert picks == [False, False, True, False, False, True] + [False] * 6
    off = _Sampler(_settings(trace_rate="1"))
    assert not any(off.sample() for _ in range(3)), "level OFF traces nothing"


def test_trace_config_flags_become_the_global_settings(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--trace-config",
            f"triton,file={tmp_path / 't.json'}",
            "--trace-config",
            "level=TIMESTAMPS",
            "--trace-config",
            "level=TENSORS",
            "--trace-config",
            "rate=5",
            "--trace-config",
            "count=7",
            "--trace-config",
            "triton,log-frequency=2",
        ]
    )
    options = options_from_args(args)
    assert options.trace_file == tmp_path / "t.json"
    assert options.trace_settings == {
        "trace_level": ["TIMESTAMPS", "TENSORS"],
        "trace_rate": ["5"],
        "trace_count": ["7"],
        "log_frequency": ["2"],
        "trace_file": [str(tmp_path / "t.json")],
    }


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("rate=x", "Unable to parse 'trace_rate', got: x"),
        ("level=LOUD", "unsupported trace level 'LOUD'"),
        ("mode=zipkin", "unknown trace mode 'zipkin'"),
        ("triton,colour=red", "unknown trace setting 'colour'"),
        ("triton,file=/no/such/dir/t.json", "no such directory"),
    ],
)
def test_serve_refuses_bad_trace_config(flag: str, message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kernel", "serve", "--trace-config", flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert message in out.stderr


def test_traces_have_tritons_shape_events_and_tensors(repo: Path, tmp_path: Path) -> None:
    add_models(repo)
    trace_file = tmp_path / "trace.json"
    with ServerThread(
        repo,
        trace_file=trace_file,
        trace_settings={"trace_level": ["TIMESTAMPS", "TENSORS"], "trace_rate": ["1"]},
    ) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            settings = http.get_trace_settings()
            assert settings["trace_file"] == str(trace_file)
            assert settings["trace_level"] == ["TIMESTAMPS", "TENSORS"]
            inputs = [
                httpclient.InferInput("INPUT0", [1, 4], "FP32"),
                httpclient.InferInput("INPUT1", [1, 4], "FP32"),
            ]
            inputs[0].set_data_from_numpy(np.array([[1.5, 2, 3, 4]], np.float32))
            inputs[1].set_data_from_numpy(np.ones((1, 4), np.float32))
            http.infer("add", inputs, request_id="req-7")
            # an ensemble: its steps are child traces
            ens = [httpclient.InferInput(n, [2, 4], "FP32") for n in ("A", "B")]
            for item, (_, value) in zip(ens, sorted(pair().items()), strict=True):
                item.set_data_from_numpy(value)
            http.infer("e", ens, request_id="ens-1")
        finally:
            http.close()
    objects = json.loads(trace_file.read_text())
    traces = _traces(objects)
    add = next(t for t in traces.values() if t["head"]["request_id"] == "req-7")
    head = add["head"]
    assert head == {
        "id": head["id"],
        "model_name": "add",
        "model_version": 1,
        "request_id": "req-7",
    }
    assert [e for e in add["events"] if e in ORDER] == ORDER
    assert add["ns"] == sorted(add["ns"])
    assert "INFER_RESPONSE_COMPLETE" in add["events"]
    assert (
        "TENSOR_QUEUE_INPUT",
        {"name": "INPUT0", "data": "1.5,2,3,4", "shape": "1,4", "dtype": "FP32"},
    ) in add["tensors"]
    outputs = {t["name"]: t for a, t in add["tensors"] if a == "TENSOR_BACKEND_OUTPUT"}
    assert outputs["OUTPUT0"]["data"] == "2.5,3,4,5"
    ensemble = next(t for t in traces.values() if t["head"]["model_name"] == "e")
    children = [t for t in traces.values() if t["head"].get("parent_id") == ensemble["head"]["id"]]
    assert sorted(c["head"]["model_name"] for c in children) == ["add", "ident"]
    for child in children:
        assert [e for e in child["events"] if e in ORDER] == ORDER
        assert child["head"]["request_id"] == "ens-1"
    assert "parent_id" not in ensemble["head"]
    assert ensemble["events"][0] == "REQUEST_START" and ensemble["events"][-1] == "REQUEST_END"


def _add_inputs(module: Any) -> list[Any]:
    inputs = [module.InferInput(n, [1, 4], "FP32") for n in ("INPUT0", "INPUT1")]
    for item in inputs:
        item.set_data_from_numpy(np.ones((1, 4), np.float32))
    return inputs


def test_settings_api_turns_tracing_on_per_model_and_log_frequency_splits_files(
    repo: Path, tmp_path: Path, kt_config: Any
) -> None:
    write_model(repo, "a", kt_config("addsub"))
    write_model(repo, "b", kt_config("addsub"))
    trace_file = tmp_path / "trace.json"
    with ServerThread(repo, trace_file=trace_file) as server:
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            http.infer("a", _add_inputs(httpclient))  # level OFF: not traced
            # gRPC, per model: every 2nd request of 'b', at most 3, 2 traces a file
            grpc.update_trace_settings(
                "b",
                {"trace_level": ["TIMESTAMPS"], "trace_rate": "2", "trace_count": "3"},
            )
            http.update_trace_settings(settings={"log_frequency": "2"})
            for _ in range(10):
                grpc.infer("b", _add_inputs(grpcclient))
            http.infer("a", _add_inputs(httpclient))  # 'a' still follows the global OFF
            with pytest.raises(Exception, match="can not be updated through network"):
                http.update_trace_settings(settings={"trace_file": "/tmp/x"})
        finally:
            grpc.close()
            http.close()
    first = json.loads(Path(f"{trace_file}.0").read_text())
    second = json.loads(Path(f"{trace_file}.1").read_text())
    assert len(_traces(first)) == 2 and len(_traces(second)) == 1
    heads = [t["head"] for t in [*_traces(first).values(), *_traces(second).values()]]
    assert {h["model_name"] for h in heads} == {"b"}
    for trace in _traces(first).values():
        assert (
            trace["events"] == [*ORDER[:-1], "INFER_RESPONSE_COMPLETE", "REQUEST_END"]
            or [e for e in trace["events"] if e in ORDER] == ORDER
        )
        assert trace["tensors"] == []
    assert not trace_file.exists() or trace_file.read_text() in ("", "[]")


def test_tensors_level_alone_writes_tensors_only(
    repo: Path, tmp_path: Path, kt_config: Any
) -> None:
    """As tritonserver: without TIMESTAMPS a trace is its tensor activities alone."""
    write_model(repo, "a", kt_config("addsub"))
    trace_file = tmp_path / "trace.json"
    settings = {"trace_level": ["TENSORS"], "trace_rate": ["1"]}
    with ServerThread(repo, trace_file=trace_file, trace_settings=settings) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            http.infer("a", _add_inputs(httpclient))
        finally:
            http.close()
    objects = json.loads(trace_file.read_text())
    assert [o["activity"] for o in objects] == ["TENSOR_QUEUE_INPUT"] * 2 + [
        "TENSOR_BACKEND_OUTPUT"
    ] * 2
    assert {o["id"] for o in objects} == {1}


def test_no_trace_file_means_no_tracing(repo: Path, kt_config: Any) -> None:
    write_model(repo, "a", kt_config("addsub"))
    with ServerThread(
        repo, trace_settings={"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]}
    ) as server:
        assert not server.server.tracer.active
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            http.infer("a", _add_inputs(httpclient))
        finally:
            http.close()


_BLS_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = [pb_utils.get_input_tensor_by_name(request, n) for n in ("INPUT0", "INPUT1")]
            call = pb_utils.InferenceRequest(
                model_name="add",
                inputs=inputs,
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                trace=request.trace(),
            )
            result = call.exec()
            responses.append(pb_utils.InferenceResponse(output_tensors=result.output_tensors()))
        return responses
"""


@pytest.mark.parametrize("mode", ["in_process", "process"])
def test_bls_call_with_the_requests_trace_is_a_child_trace(
    repo: Path, tmp_path: Path, kt_config: Any, mode: str
) -> None:
    """A Python model passing ``trace=request.trace()`` to its BLS request, as in Triton: the
    call is traced as a child of the request (in both execution modes)."""
    write_model(repo, "add", kt_config("addsub"))
    config = kt_config("addsub", backend="python").replace(
        'parameters { key: "behaviour"',
        f'parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}\n'
        'parameters { key: "behaviour"',
    )
    write_model(repo, "bls", config)
    (repo / "bls" / "1" / "model.py").write_text(_BLS_MODEL)
    trace_file = tmp_path / "trace.json"
    settings = {"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]}
    with ServerThread(repo, trace_file=trace_file, trace_settings=settings) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            http.infer("bls", _add_inputs(httpclient), request_id="outer")
        finally:
            http.close()
    traces = _traces(json.loads(trace_file.read_text()))
    outer = next(t for t in traces.values() if t["head"]["model_name"] == "bls")
    inner = next(t for t in traces.values() if t["head"]["model_name"] == "add")
    assert inner["head"]["parent_id"] == outer["head"]["id"]
    assert "parent_id" not in outer["head"]
    assert [e for e in inner["events"] if e in ORDER] == ORDER
    # the call ran inside the outer request's compute
    assert outer["ns"][outer["events"].index("COMPUTE_START")] <= inner["ns"][0]


def test_an_unwritable_trace_file_stops_tracing_not_serving(
    repo: Path, tmp_path: Path, kt_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_model(repo, "a", kt_config("addsub"))
    settings = {"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]}
    with ServerThread(repo, trace_file=tmp_path, trace_settings=settings) as server:  # a folder
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            for _ in range(3):
                http.infer("a", _add_inputs(httpclient))
        finally:
            http.close()
    assert any("writing traces to" in r.getMessage() for r in caplog.records)


def test_kernel_serve_with_trace_config_writes_the_file_at_shutdown(
    repo: Path, tmp_path: Path, kt_config: Any
) -> None:
    """End to end, as an operator runs it: tritonserver's flags, one request, SIGTERM."""
    import signal
    import socket
    import time

    write_model(repo, "a", kt_config("addsub"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    trace_file = tmp_path / "trace.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kernel",
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            str(port),
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--trace-config",
            f"triton,file={trace_file}",
            "--trace-config",
            "level=TIMESTAMPS",
            "--trace-config",
            "rate=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.is_model_ready("a"):
                        break
                except Exception:  # not listening yet
                    pass
                time.sleep(0.2)
            client.infer("a", _add_inputs(httpclient), request_id="from-cli")
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    traces = _traces(json.loads(trace_file.read_text()))
    (trace,) = traces.values()
    assert trace["head"]["request_id"] == "from-cli"
    assert [e for e in trace["events"] if e in ORDER] == ORDER
