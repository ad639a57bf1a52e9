"""The metrics endpoint: Triton's ``nv_*`` families in Prometheus text, per model version."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kernel._statistics import FailureReason, ModelStatistics
from kernel.frontends._metrics import _CpuSampler, _memory, render_metrics
from kernel.testing import RunningServer, ServerThread, write_model

CONFIG = """
backend: "kerneltest"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "behaviour" value { string_value: "%s" } }
"""

PER_MODEL = {
    "nv_inference_request_success": "counter",
    "nv_inference_request_failure": "counter",
    "nv_inference_count": "counter",
    "nv_inference_exec_count": "counter",
    "nv_inference_request_duration_us": "counter",
    "nv_inference_queue_duration_us": "counter",
    "nv_inference_compute_input_duration_us": "counter",
    "nv_inference_compute_infer_duration_us": "counter",
    "nv_inference_compute_output_duration_us": "counter",
    "nv_inference_pending_request_count": "gauge",
}
MACHINE = {
    "nv_cpu_utilization": "gauge",
    "nv_cpu_memory_total_bytes": "gauge",
    "nv_cpu_memory_used_bytes": "gauge",
}


def parse(text: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """HELP texts, TYPEs and samples (``name{labels}`` -> value) of Prometheus text."""
    helps, types, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, text_ = line[7:].partition(" ")
            helps[name] = text_
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
        elif line:
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return helps, types, samples


def test_render_names_help_types_and_labels() -> None:
    stats = ModelStatistics("m", 2)
    stats.record_request(3_000_000, failed=None)
    stats.record_request(1_000_000, failed=FailureReason.BACKEND)
    stats.record_execution(4, 2, (1_000, 2_000_000, 3_000), 5_000)
    other = ModelStatistics('we"ird\\', 1)
    text = render_metrics([(stats, 3), (other, 0)], 0.25, (1000, 400))
    helps, types, samples = parse(text)
    assert types == {**PER_MODEL, **MACHINE}
    assert helps["nv_inference_request_success"] == (
        "Number of successful inference requests, all batch sizes"
    )
    assert helps["nv_inference_pending_request_count"] == (
        "Instantaneous number of pending requests awaiting execution per-model."
    )
    label = 'model="m",version="2"'
    assert samples[f"nv_inference_request_success{{{label}}}"] == 1
    assert samples['nv_inference_request_failure{model="m",reason="BACKEND",version="2"}'] == 1
    for reason in ("REJECTED", "CANCELED", "OTHER"):
        assert (
            samples[f'nv_inference_request_failure{{model="m",reason="{reason}",version="2"}}'] == 0
        )
    assert samples[f"nv_inference_count{{{label}}}"] == 4
    assert samples[f"nv_inference_exec_count{{{label}}}"] == 1
    assert samples[f"nv_inference_request_duration_us{{{label}}}"] == 4000
    assert samples[f"nv_inference_queue_duration_us{{{label}}}"] == 5
    assert samples[f"nv_inference_compute_input_duration_us{{{label}}}"] == 1
    assert samples[f"nv_inference_compute_infer_duration_us{{{label}}}"] == 2000
    assert samples[f"nv_inference_compute_output_duration_us{{{label}}}"] == 3
    assert samples[f"nv_inference_pending_request_count{{{label}}}"] == 3
    assert samples['nv_inference_count{model="we\\"ird\\\\",version="1"}'] == 0
    assert samples["nv_cpu_utilization"] == 0.25
    assert samples["nv_cpu_memory_total_bytes"] == 1000
    assert samples["nv_cpu_memory_used_bytes"] == 400


def test_cpu_utilization_between_reads(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    sampler = _CpuSampler(stat)
    stat.write_text("cpu  160 0 120 740 100 0 0 0 50 0\n")  # 80 busy of 120
    assert sampler.utilization() == pytest.approx(80 / 120)
    assert sampler.utilization() == pytest.approx(80 / 120)  # no time passed: last value
    assert _CpuSampler(tmp_path / "missing").utilization() == 0.0


def test_memory_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemFree:  100 kB\nMemAvailable:  250 kB\n")
    assert _memory(meminfo) == (1000 * 1024, 750 * 1024)
    assert _memory(tmp_path / "missing") == (0, 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("models")
    write_model(root, "ident", CONFIG % "identity")
    write_model(root, "raiser", CONFIG % "raise")
    with ServerThread(root, grpc_port=None) as running:
        yield running


def scrape(server: RunningServer, path: str = "/metrics", method: str = "GET") -> tuple[int, str]:
    host, port = server.metrics_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
        return response.status, response.read().decode()
    finally:
        conn.close()


def infer(client: httpclient.InferenceServerClient, model: str, rows: int) -> None:
    tensor = httpclient.InferInput("INPUT0", [rows, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 4), dtype=np.float32))
    client.infer(model, [tensor])


def test_scrape_after_inference(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.http_url) as client:
        infer(client, "ident", 3)
        infer(client, "ident", 1)
        with pytest.raises(InferenceServerException):
            infer(client, "raiser", 1)
    label = 'model="ident",version="1"'
    for _ in range(200):  # executions are counted when execute returns
        status, text = scrape(server)
        _, types, samples = parse(text)
        if samples.get(f"nv_inference_exec_count{{{label}}}") == 2:
            break
        time.sleep(0.01)
    assert status == 200
    assert types == {**PER_MODEL, **MACHINE}
    assert samples[f"nv_inference_request_success{{{label}}}"] == 2
    assert samples[f"nv_inference_count{{{label}}}"] == 4
    assert samples[f"nv_inference_exec_count{{{label}}}"] == 2
    assert samples[f"nv_inference_pending_request_count{{{label}}}"] == 0
    assert samples[f"nv_inference_request_duration_us{{{label}}}"] > 0
    failed = 'nv_inference_request_failure{model="raiser",reason="BACKEND",version="1"}'
    assert samples[failed] == 1
    assert samples['nv_inference_request_success{model="raiser",version="1"}'] == 0
    assert 0.0 <= samples["nv_cpu_utilization"] <= 1.0
    assert samples["nv_cpu_memory_total_bytes"] >= samples["nv_cpu_memory_used_bytes"] > 0
    # every sample line is well formed
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(r"nv_\w+(\{[^}]*\})? [0-9.e+-]+", line), line


def test_other_paths_and_methods(server: RunningServer) -> None:
    assert scrape(server, "/metrics/x") == (404, '{"error":"Not Found"}')
    assert scrape(server, "/") == (404, '{"error":"Not Found"}')
    assert scrape(server, "/metrics", "POST") == (405, '{"error":"Method Not Allowed"}')


class _Family:
    def render(self) -> str:
        return (
            "# HELP my_plugin_total Things done\n# TYPE my_plugin_total counter\n"
            'my_plugin_total{model="x"} 7'
        )


class _Broken:
    def render(self) -> str:
        raise RuntimeError("boom")


def test_custom_metric_families_hook(server: RunningServer) -> None:
    target = server.server
    target.metric_families = [_Broken(), _Family()]  # type: ignore[attr-defined]
    try:
        status, text = scrape(server)
    finally:
        del target.metric_families  # type: ignore[attr-defined]
    assert status == 200
    _, types, samples = parse(text)
    assert types["my_plugin_total"] == "counter"
    assert samples['my_plugin_total{model="x"}'] == 7
    assert "nv_inference_count" in types
