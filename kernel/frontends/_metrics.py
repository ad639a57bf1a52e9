"""The metrics endpoint: Prometheus text on ``GET /metrics``, with Triton's ``nv_*`` families.

Per model version (labels ``model``, ``version``), from :class:`kernel._statistics.ModelStatistics`:
request success and failure counts (failures also by ``reason``), inference and execution counts,
cumulative request, queue and compute durations in microseconds, and the pending request count.
Machine-wide: CPU utilization (from ``/proc/stat``, measured between scrapes) and CPU memory
(from ``/proc/meminfo``), as Triton reports them; and per GPU, where NVML finds one, Triton's
``nv_gpu_*`` / ``nv_energy_consumption`` families (:mod:`kernel.frontends._gpu`).

Plugins' own families join through one hook: every ``MetricSource`` a plugin registered with
``server.add_metric_family`` renders its Prometheus text (HELP and TYPE lines included) into each
scrape.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import anyio

from kernel._backend import MetricSource
from kernel._server import InferenceServer
from kernel._statistics import FailureReason, ModelStatistics
from kernel.frontends._gpu import GpuMetrics
from kernel.frontends._http_server import HttpLimits, HttpListener, HttpRequest, Reply

__all__ = ["MetricsFrontend", "render_metrics"]

log = logging.getLogger("kernel.frontends.metrics")

_CONTENT_TYPE = (b"content-type", b"text/plain; charset=utf-8")
_REASONS = (
    FailureReason.REJECTED,
    FailureReason.CANCELED,
    FailureReason.BACKEND,
    FailureReason.OTHER,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _CpuSampler:
    """CPU utilization between two reads of ``/proc/stat`` (the first read is at start)."""

    def __init__(self, path: Path = Path("/proc/stat")) -> None:
        self._path = path
        self._last = self._read()
        self._value = 0.0

    def _read(self) -> tuple[int, int] | None:
        try:
            with self._path.open() as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        times = [int(v) for v in fields[1:]]
        # guest times are already counted in user and nice
        total = sum(times[:8])
        idle = times[3] + (times[4] if len(times) > 4 else 0)
        return total, idle

    def utilization(self) -> float:
        sample = self._read()
        if sample is not None and self._last is not None:
            total = sample[0] - self._last[0]
            idle = sample[1] - self._last[1]
            if total > 0:
                self._value = min(max(1.0 - idle / total, 0.0), 1.0)
        if sample is not None:
            self._last = sample
        return self._value


def _memory(path: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """Total and used CPU memory in bytes (used = total - available)."""
    values: dict[str, int] = {}
    try:
        with path.open() as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    total = values.get("MemTotal", 0)
    return total, total - values.get("MemAvailable", total)


def _family(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


_SUMMARY_TEXT = {
    "request": (
        "nv_inference_request_summary_us",
        "Summary of inference request duration in microseconds (includes cached requests)",
    ),
    "queue": (
        "nv_inference_queue_summary_us",
        "Summary of inference queuing duration in microseconds (includes cached requests)",
    ),
    "compute_input": (
        "nv_inference_compute_input_summary_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    "compute_infer": (
        "nv_inference_compute_infer_summary_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    "compute_output": (
        "nv_inference_compute_output_summary_us",
        "Cumulative inference compute output duration in microseconds (does not include cached"
        " requests)",
    ),
}


def _number(value: float) -> str:
    if value != value:  # NaN: no observation in the window
        return "NaN"
    return str(int(value)) if value == int(value) else repr(value)


def _latency_families(lines: list[str], stats: list[ModelStatistics], labels: list[str]) -> None:
    """tritonserver's ``--metrics-config`` latency summaries and first-response histogram."""
    recorders = [
        (label, s.latency) for s, label in zip(stats, labels, strict=True) if s.latency is not None
    ]
    summaries = [(label, r) for label, r in recorders if r.summaries is not None]
    now = time.monotonic()
    for key, (name, text) in _SUMMARY_TEXT.items():
        if not summaries:
            break
        _family(lines, name, "summary", text)
        for label, recorder in summaries:
            assert recorder.summaries is not None
            summary = recorder.summaries[key]
            lines.append(f"{name}_count{{{label}}} {summary.count}")
            lines.append(f"{name}_sum{{{label}}} {summary.total}")
            for quantile, value in summary.quantiles(recorder.config.quantiles, now):
                lines.append(f'{name}{{{label},quantile="{quantile:g}"}} {_number(value)}')
    histograms = [(label, r.first_response) for label, r in recorders if r.first_response]
    if histograms:
        name = "nv_inference_first_response_histogram_ms"
        _family(
            lines,
            name,
            "histogram",
            "Duration from request to first response in milliseconds",
        )
        for label, histogram in histograms:
            assert histogram is not None
            for bound, count in histogram.cumulative():
                lines.append(f'{name}_bucket{{{label},le="{bound}"}} {count}')
            lines.append(f"{name}_sum{{{label}}} {_number(histogram.total)}")
            lines.append(f"{name}_count{{{label}}} {histogram.count}")


def render_metrics(
    rows: Iterable[tuple[ModelStatistics, int]],
    cpu_utilization: float,
    memory: tuple[int, int],
    extra: Iterable[MetricSource] = (),
    *,
    cache: bool = False,
    gpu: str = "",
) -> str:
    """Prometheus text for ``(statistics, pending requests)`` of each loaded model version;
    with ``cache`` (a response cache is configured) also Triton's per-model cache families;
    ``gpu``: the GPU families already rendered (:meth:`GpuMetrics.render`)."""
    rows = list(rows)
    labels = [f'model="{_escape(s.name)}",version="{s.version}"' for s, _ in rows]
    lines: list[str] = []

    def per_model(name: str, kind: str, text: str, values: list[int]) -> None:
        _family(lines, name, kind, text)
        lines.extend(
            f"{name}{{{label}}} {value}" for label, value in zip(labels, values, strict=True)
        )

    stats = [s for s, _ in rows]
    per_model(
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        [s.success.count for s in stats],
    )
    _family(
        lines,
        "nv_inference_request_failure",
        "counter",
        "Number of failed inference requests, all batch sizes",
    )
    for s in stats:
        model = _escape(s.name)
        for reason in _REASONS:
            lines.append(
                f'nv_inference_request_failure{{model="{model}",reason="{reason}",'
                f'version="{s.version}"}} {s.failures.get(reason, 0)}'
            )
    per_model(
        "nv_inference_count",
        "counter",
        "Number of inferences performed (does not include cached requests)",
        [s.inference_count for s in stats],
    )
    per_model(
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
        [s.execution_count for s in stats],
    )
    per_model(
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        [(s.success.ns + s.fail.ns) // 1000 for s in stats],
    )
    per_model(
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        [s.queue.ns // 1000 for s in stats],
    )
    per_model(
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        [s.compute_input.ns // 1000 for s in stats],
    )
    per_model(
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        [s.compute_infer.ns // 1000 for s in stats],
    )
    per_model(
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached"
        " requests)",
        [s.compute_output.ns // 1000 for s in stats],
    )
    per_model(
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        [pending for _, pending in rows],
    )
    if cache:
        per_model(
            "nv_cache_num_hits_per_model",
            "counter",
            "Number of cache hits per model",
            [s.cache_hit.count for s in stats],
        )
        per_model(
            "nv_cache_num_misses_per_model",
            "counter",
            "Number of cache misses per model",
            [s.cache_miss.count for s in stats],
        )
        per_model(
            "nv_cache_hit_duration_per_model",
            "counter",
            "Total cache hit duration per model, in microseconds",
            [s.cache_hit.ns // 1000 for s in stats],
        )
        per_model(
            "nv_cache_miss_duration_per_model",
            "counter",
            "Total cache miss (insert + lookup) duration per model, in microseconds",
            [s.cache_miss.ns // 1000 for s in stats],
        )
    _latency_families(lines, stats, labels)
    _family(lines, "nv_cpu_utilization", "gauge", "CPU utilization rate [0.0 - 1.0]")
    lines.append(f"nv_cpu_utilization {cpu_utilization!r}")
    _family(lines, "nv_cpu_memory_total_bytes", "gauge", "CPU total memory (RAM), in bytes")
    lines.append(f"nv_cpu_memory_total_bytes {memory[0]}")
    _family(lines, "nv_cpu_memory_used_bytes", "gauge", "CPU used memory (RAM), in bytes")
    lines.append(f"nv_cpu_memory_used_bytes {memory[1]}")
    text = "\n".join(lines) + "\n" + gpu
    for family in extra:
        try:
            rendered = family.render()
        except Exception:
            log.exception("metric family %r failed to render", family)
            continue
        if rendered:
            text += rendered if rendered.endswith("\n") else rendered + "\n"
    return text


class _MetricsApp:
    """Answers ``GET /metrics``; every other path is 404, every other method 405."""

    max_body = 64 * 1024

    def __init__(self, server: InferenceServer, gpu: GpuMetrics | None = None) -> None:
        self._server = server
        self._cpu = _CpuSampler()
        self._gpu = gpu

    async def handle(self, request: HttpRequest) -> Reply:
        if request.path != "/metrics":
            return Reply(404, [_CONTENT_TYPE], [b'{"error":"Not Found"}'])
        if request.method != "GET":
            return Reply(
                405, [_CONTENT_TYPE, (b"allow", b"GET, HEAD")], [b'{"error":"Method Not Allowed"}']
            )
        try:
            gpu = await anyio.to_thread.run_sync(self._gpu.render) if self._gpu else ""
            text = self.render(gpu)
        except Exception:
            log.exception("rendering the metrics failed")
            return Reply(500, [_CONTENT_TYPE], [b'{"error":"failed to render the metrics"}'])
        return Reply(200, [_CONTENT_TYPE], [text.encode()])

    def render(self, gpu: str = "") -> str:
        server = self._server
        rows = [(v.stats, v.pending()) for v in server.manager.loaded_versions()]
        return render_metrics(
            rows,
            self._cpu.utilization(),
            _memory(),
            server.metric_families,
            cache=server.response_cache is not None,
            gpu=gpu,
        )


class MetricsFrontend:
    """Serves the metrics endpoint on its own port (Triton's 8002)."""

    def __init__(self) -> None:
        self._listener: HttpListener | None = None
        self._gpu: GpuMetrics | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening) until :meth:`stop`."""
        if server.options.allow_gpu_metrics:
            self._gpu = await anyio.to_thread.run_sync(GpuMetrics.open)
        app = _MetricsApp(server, self._gpu)
        self._listener = HttpListener(
            app, HttpLimits.from_options(server.options, max_body=app.max_body)
        )
        await self._listener.start(sock)

    async def stop(self, timeout: float) -> None:
        """Stop accepting; finish scrapes in progress for up to ``timeout`` s; close."""
        if self._listener is not None:
            await self._listener.stop(timeout)
            self._listener = None
        if self._gpu is not None:
            await anyio.to_thread.run_sync(self._gpu.close)
            self._gpu = None
