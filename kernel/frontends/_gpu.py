"""Triton's GPU metric families, read through NVML (nvidia-ml-py), only where a GPU is present.

tritonserver reads these through DCGM; the families, labels and units are its own:

| family | type | value |
|---|---|---|
| ``nv_gpu_utilization`` | gauge | ``nvmlDeviceGetUtilizationRates().gpu`` / 100 |
| ``nv_gpu_memory_total_bytes`` | gauge | ``nvmlDeviceGetMemoryInfo().total`` |
| ``nv_gpu_memory_used_bytes`` | gauge | ``nvmlDeviceGetMemoryInfo().used`` |
| ``nv_gpu_power_usage`` | gauge | ``nvmlDeviceGetPowerUsage()`` mW, in watts |
| ``nv_gpu_power_limit`` | gauge | ``nvmlDeviceGetPowerManagementLimit()`` mW, in watts |
| ``nv_energy_consumption`` | counter | ``nvmlDeviceGetTotalEnergyConsumption()`` mJ since |
|  |  | the metrics endpoint started, in joules |

each labelled ``gpu_uuid`` (``GPU-...``). Without the ``pynvml`` module, the NVIDIA driver's
library or any device, :meth:`GpuMetrics.open` answers ``None`` and no GPU family is shown,
as tritonserver on a machine without GPUs. A value a device does not support is left out for
that device. NVML calls may take milliseconds: the metrics endpoint makes them in a worker
thread, never on the event loop.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

__all__ = ["GpuMetrics"]

log = logging.getLogger("kernel.frontends.metrics")

_FAMILIES = (
    ("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)"),
    ("nv_gpu_memory_total_bytes", "gauge", "GPU total memory, in bytes"),
    ("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes"),
    ("nv_gpu_power_usage", "gauge", "GPU power usage in watts"),
    ("nv_gpu_power_limit", "gauge", "GPU power management limit in watts"),
    (
        "nv_energy_consumption",
        "counter",
        "GPU energy consumption in joules since the Triton Server started",
    ),
)


class GpuMetrics:
    """The GPUs NVML sees, sampled on each scrape."""

    def __init__(self, nvml: Any, devices: list[tuple[str, Any, int | None]]) -> None:
        self._nvml = nvml
        self._devices = devices
        """``(uuid, handle, energy in mJ at start or None)`` per device."""
        self._lock = threading.Lock()  # scrapes may overlap in worker threads
        self._closed = False

    @classmethod
    def open(cls, module: str = "pynvml") -> GpuMetrics | None:
        """NVML's devices, or ``None`` without NVML, its library or a GPU (logged at debug)."""
        try:
            nvml = importlib.import_module(module)
        except ImportError:
            log.debug("no GPU metrics: %s is not installed", module)
            return None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            log.debug("no GPU metrics: NVML did not start (%s)", exc)
            return None
        devices: list[tuple[str, Any, int | None]] = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                if isinstance(uuid, bytes):  # older nvidia-ml-py
                    uuid = uuid.decode()
                devices.append(
                    (str(uuid), handle, _call(nvml.nvmlDeviceGetTotalEnergyConsumption, handle))
                )
        except Exception as exc:
            log.warning("no GPU metrics: NVML could not list the devices (%s)", exc)
            devices = []
        if not devices:
            nvml.nvmlShutdown()
            return None
        log.info("GPU metrics for %d device(s) through NVML", len(devices))
        return cls(nvml, devices)

    @property
    def uuids(self) -> list[str]:
        return [uuid for uuid, _, _ in self._devices]

    def render(self) -> str:
        """The six families in Prometheus text (blocks on NVML: call off the event loop)."""
        nvml = self._nvml
        values: dict[str, list[tuple[str, float | int]]] = {name: [] for name, _, _ in _FAMILIES}
        with self._lock:
            if self._closed:
                return ""
            for uuid, handle, energy_start in self._devices:
                utilization = _call(nvml.nvmlDeviceGetUtilizationRates, handle)
                if utilization is not None:
                    values["nv_gpu_utilization"].append((uuid, utilization.gpu / 100))
                memory = _call(nvml.nvmlDeviceGetMemoryInfo, handle)
                if memory is not None:
                    values["nv_gpu_memory_total_bytes"].append((uuid, int(memory.total)))
                    values["nv_gpu_memory_used_bytes"].append((uuid, int(memory.used)))
                power = _call(nvml.nvmlDeviceGetPowerUsage, handle)
                if power is not None:
                    values["nv_gpu_power_usage"].append((uuid, power / 1000))
                limit = _call(nvml.nvmlDeviceGetPowerManagementLimit, handle)
                if limit is not None:
                    values["nv_gpu_power_limit"].append((uuid, limit / 1000))
                energy = _call(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
                if energy is not None and energy_start is not None:
                    values["nv_energy_consumption"].append((uuid, (energy - energy_start) / 1000))
        lines: list[str] = []
        for name, kind, text in _FAMILIES:
            if not values[name]:
                continue
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for uuid, value in values[name]:
                lines.append(f'{name}{{gpu_uuid="{_escape(uuid)}"}} {value!r}')
        return "\n".join(lines) + "\n" if lines else ""

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._nvml.nvmlShutdown()
                except Exception as exc:
                    log.debug("NVML shutdown failed: %s", exc)


def _call(function: Any, handle: Any) -> Any:
    """``function(handle)``, or ``None`` for what the device does not support."""
    try:
        return function(handle)
    except Exception:  # NVMLError_NotSupported and kin: leave the value out
        return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
