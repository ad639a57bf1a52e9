"""Triton's GPU metric families through NVML: a fake NVML module stands in for a GPU (there is
none here), and without one the families are absent, for real. The exposition is checked by
prometheus_client's text parser."""

from __future__ import annotations

import sys
import types
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel.frontends._gpu import GpuMetrics
from kernel.testing import ServerThread

GPU_FAMILIES = {
    "nv_gpu_utilization": "gauge",
    "nv_gpu_memory_total_bytes": "gauge",
    "nv_gpu_memory_used_bytes": "gauge",
    "nv_gpu_power_usage": "gauge",
    "nv_gpu_power_limit": "gauge",
    "nv_energy_consumption": "counter",
}


class _NotSupportedError(Exception):
    pass


def _fake_nvml() -> types.ModuleType:
    """Two GPUs as NVML reports them; the second cannot tell its power limit."""
    nvml = types.ModuleType("pynvml")
    calls: dict[str, int] = {"init": 0, "shutdown": 0}
    energy = {0: [1_000_000, 1_250_000], 1: [5_000, 5_000]}  # mJ at start, then later

    def get_energy(handle: int) -> int:
        readings = energy[handle]
        return readings.pop(0) if len(readings) > 1 else readings[0]

    def power_limit(handle: int) -> int:
        if handle == 1:
            raise _NotSupportedError("Not Supported")
        return 300_000

    def init() -> None:
        calls["init"] += 1

    def shutdown() -> None:
        calls["shutdown"] += 1

    nvml.calls = calls  # type: ignore[attr-defined]
    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h:08d}-fake"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        gpu=[37, 0][h], memory=5
    )
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=16 * 2**30, used=[2**30, 0][h], free=0
    )
    nvml.nvmlDeviceGetPowerUsage = lambda h: [75_500, 20_000][h]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetPowerManagementLimit = power_limit  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetTotalEnergyConsumption = get_energy  # type: ignore[attr-defined]
    return nvml


def _samples(text: str) -> dict[str, dict[str, float]]:
    """family -> {gpu_uuid: value}, every family of the text parsed."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in GPU_FAMILIES or family.name.startswith("nv_energy"):
            assert family.type == GPU_FAMILIES[family.name], family.name
            for sample in family.samples:
                assert set(sample.labels) == {"gpu_uuid"}
                out.setdefault(family.name, {})[sample.labels["gpu_uuid"]] = sample.value
    return out


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=30) as reply:
        return str(reply.read().decode())


def test_families_from_nvml_with_tritons_names_units_and_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    gpu = GpuMetrics.open()
    assert gpu is not None and gpu.uuids == ["GPU-00000000-fake", "GPU-00000001-fake"]
    samples = _samples(gpu.render())
    first, second = gpu.uuids
    assert samples["nv_gpu_utilization"] == {first: 0.37, second: 0.0}
    assert samples["nv_gpu_memory_total_bytes"] == {first: 16 * 2**30, second: 16 * 2**30}
    assert samples["nv_gpu_memory_used_bytes"] == {first: 2**30, second: 0}
    assert samples["nv_gpu_power_usage"] == {first: 75.5, second: 20.0}
    assert samples["nv_gpu_power_limit"] == {first: 300.0}  # the second cannot tell
    # counted from when the endpoint opened NVML: 250,000 mJ later
    assert samples["nv_energy_consumption"] == {first: 250.0, second: 0.0}
    gpu.close()
    gpu.close()
    assert nvml.calls == {"init": 1, "shutdown": 1}  # type: ignore[attr-defined]
    assert gpu.render() == ""


def test_metrics_endpoint_shows_the_gpus_and_closes_nvml(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with ServerThread(repo) as server:
        text = _scrape(server.metrics_url)
    samples = _samples(text)
    assert set(samples) == set(GPU_FAMILIES)
    assert samples["nv_gpu_utilization"]["GPU-00000000-fake"] == 0.37
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"nv_cpu_utilization", "nv_cpu_memory_total_bytes"} <= names
    assert nvml.calls == {"init": 1, "shutdown": 1}  # type: ignore[attr-defined]


def test_allow_gpu_metrics_false_never_touches_nvml(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with ServerThread(repo, allow_gpu_metrics=False) as server:
        text = _scrape(server.metrics_url)
    assert _samples(text) == {}
    assert nvml.calls == {"init": 0, "shutdown": 0}  # type: ignore[attr-defined]


def test_no_gpu_here_means_no_gpu_families(repo: Path) -> None:
    """For real: nvidia-ml-py is installed but this machine has no NVIDIA driver or GPU."""
    import pynvml

    with pytest.raises(pynvml.NVMLError):
        pynvml.nvmlInit()
    assert GpuMetrics.open() is None
    with ServerThread(repo) as server:
        text = _scrape(server.metrics_url)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "nv_cpu_utilization" in names
    assert not any(name.startswith(("nv_gpu", "nv_energy")) for name in names)


def test_without_nvidia_ml_py_there_are_no_gpu_families(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if not installed
    assert GpuMetrics.open() is None


def test_a_failing_device_listing_shows_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml: Any = _fake_nvml()

    def broken() -> int:
        raise _NotSupportedError("GPU is lost")

    nvml.nvmlDeviceGetCount = broken
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert GpuMetrics.open() is None
    assert nvml.calls == {"init": 1, "shutdown": 1}
