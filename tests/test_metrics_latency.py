"""``--metrics-config summary_latencies/histogram_latencies``: tritonserver's latency families,
checked by prometheus_client's own text parser."""

from __future__ import annotations

import math
import subprocess
import sys
import types
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel._inference import InferenceRequest
from kernel._latency import Histogram, SlidingSummary, parse_metrics_config
from kernel.testing import run_server, write_model

SUMMARIES = [
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
]


def test_metrics_config_parsing() -> None:
    config = parse_metrics_config(
        {"summary_latencies": "true", "summary_quantiles": "0.5:0.05,0.9:0.01"}
    )
    assert config.summaries and not config.histograms
    assert config.quantiles == (0.5, 0.9)
    assert not parse_metrics_config({}).summaries
    for bad in ({"summary_latencies": "maybe"}, {"colour": "red"}, {"summary_quantiles": "2"}):
        with pytest.raises(ValueError, match="--metrics-config"):
            parse_metrics_config(bad)


def test_summary_quantiles_and_histogram_buckets() -> None:
    summary = SlidingSummary()
    for value in range(1, 101):
        summary.observe(value, now=10.0)
    assert summary.count == 100 and summary.total == 5050
    assert dict(summary.quantiles((0.5, 0.99), now=20.0)) == {0.5: 51.0, 0.99: 100.0}
    assert all(math.isnan(v) for _, v in summary.quantiles((0.5,), now=100.0)), "window expired"
    assert summary.count == 100, "count and sum stay cumulative"
    histogram = Histogram((100.0, 500.0))
    for value in (50.0, 100.0, 300.0, 9000.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("100", 2), ("500", 3), ("+Inf", 4)]


def test_serve_refuses_a_bad_metrics_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kernel", "serve", "--metrics-config", "summary_latencies=perhaps"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "summary_latencies: expected true or false" in out.stderr


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_latency_families_parse_and_count(
    repo: Path, kt_config: Any, repeat_config: str
) -> None:
    write_model(repo, "add", kt_config("addsub"))
    write_model(repo, "repeat", repeat_config)
    async with run_server(
        repo,
        metrics_config={"summary_latencies": "true", "histogram_latencies": "true"},
    ) as srv:
        for _ in range(3):
            inputs = {"INPUT0": np.ones((1, 4), np.float32), "INPUT1": np.ones((1, 4), np.float32)}
            response = await srv.server.infer_once(InferenceRequest("add", inputs))
            assert response.error is None
        for _ in range(2):
            request = InferenceRequest("repeat", {"IN": np.array([1, 2, 3], np.int32)})
            answers = [r async for r in srv.server.infer(request)]
            assert answers[-1].final

        def scrape() -> str:
            with urllib.request.urlopen(f"http://{srv.metrics_url}/metrics", timeout=30) as reply:
                return str(reply.read().decode())

        text = await anyio.to_thread.run_sync(scrape)
    families = _families(text)
    for name in SUMMARIES:
        family = families[name]
        assert family.type == "summary"
        samples = [s for s in family.samples if s.labels.get("model") == "add"]
        count = next(s.value for s in samples if s.name == f"{name}_count")
        assert count == 3
        quantiles = sorted(float(s.labels["quantile"]) for s in samples if "quantile" in s.labels)
        assert quantiles == [0.5, 0.9, 0.95, 0.99, 0.999]
        assert all(s.labels["version"] == "1" for s in samples)
    request_summary = families["nv_inference_request_summary_us"]
    repeat_count = next(
        s.value
        for s in request_summary.samples
        if s.labels.get("model") == "repeat" and s.name.endswith("_count")
    )
    assert repeat_count == 2
    histogram = families["nv_inference_first_response_histogram_ms"]
    assert histogram.type == "histogram"
    assert {s.labels["model"] for s in histogram.samples} == {"repeat"}, "decoupled models only"
    buckets = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert list(buckets) == ["100", "500", "2000", "5000", "+Inf"]  # as prometheus-cpp writes
    assert buckets["+Inf"] == 2
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert count == 2


def test_latency_families_off_by_default() -> None:
    from kernel._statistics import ModelStatistics
    from kernel.frontends._metrics import render_metrics

    text = render_metrics([(ModelStatistics("m", 1), 0)], 0.0, (1, 1))
    assert "summary" not in text and "histogram" not in text
    _families(text)


class _OneGpu:
    """NVML's answers for one device (see tests/test_metrics_gpu.py for the module itself)."""

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:  # noqa: N802 - NVML's name
        return types.SimpleNamespace(gpu=50)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        return types.SimpleNamespace(total=2, used=1)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        return 1000

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:  # noqa: N802
        return 2000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        return 5000


def test_grafana_dashboard_uses_only_families_the_server_exposes() -> None:
    """deploy/grafana's dashboard: valid JSON whose every query names a family this server
    exposes (latency and cache families on, a GPU present)."""
    import json
    import re

    from kernel._latency import LatencyConfig, LatencyRecorder
    from kernel._statistics import ModelStatistics
    from kernel.frontends._gpu import GpuMetrics
    from kernel.frontends._metrics import render_metrics

    path = (
        Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "triton-kernel-dashboard.json"
    )
    dashboard = json.loads(path.read_text())
    stats = ModelStatistics("m", 1)
    stats.latency = LatencyRecorder(LatencyConfig(summaries=True, histograms=True), decoupled=True)
    gpu = GpuMetrics(_OneGpu(), [("GPU-0", 0, 0)]).render()  # as NVML shows a GPU
    text = render_metrics([(stats, 0)], 0.5, (2, 1), cache=True, gpu=gpu)
    families = list(text_string_to_metric_families(text))
    exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bnv_[a-z_]+", e)}
    assert used, "the dashboard queries something"
    assert used <= exposed, used - exposed
