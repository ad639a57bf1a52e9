"""Per model version counters and durations, with Triton's statistics-API names.

Updated only on the event loop (by the router and the instance workers), read by the statistics
API and the metrics endpoint. Durations are cumulative nanoseconds, as Triton reports them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel._latency import LatencyRecorder

__all__ = [
    "BatchStatistics",
    "Duration",
    "FailureReason",
    "MemoryUsage",
    "ModelStatistics",
    "ResponseStatistics",
]


@dataclass(slots=True)
class Duration:
    """A count and the total nanoseconds of what was counted (``StatisticDuration``)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStatistics:
    """The executions of one batch size (``InferBatchStatistics``)."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ResponseStatistics:
    """The k-th responses of a decoupled model's requests (``InferResponseStatistics``).

    ``compute_infer``: from the previous response (the execute start for the first) until the
    model sent it; ``compute_output``: from then until the server took it; ``success`` and
    ``fail``: their sum; ``empty_response``: a final flag without outputs (its infer time);
    ``cancel``: requests whose client left before this response.
    """

    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    empty_response: Duration = field(default_factory=Duration)
    cancel: Duration = field(default_factory=Duration)


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """Memory a loaded model holds on one device (Triton's ``MemoryUsage``), as its backend
    reports it from :meth:`kernel._backend.Model.memory_usage`."""

    type: str
    """``"CPU"``, ``"CPU_PINNED"`` or ``"GPU"``."""
    id: int
    """The device id within ``type`` (0 for the CPU)."""
    byte_size: int


class FailureReason:
    """The ``reason`` label values of ``nv_inference_request_failure``."""

    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    BACKEND = "BACKEND"
    OTHER = "OTHER"


@dataclass(slots=True)
class ModelStatistics:
    """Everything Triton's ``ModelStatistics`` message holds for one model version."""

    name: str
    version: int
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    """Requests answered from the response cache, and the time their lookups took."""
    cache_miss: Duration = field(default_factory=Duration)
    """Cache lookups that missed, and the time of the lookup plus the insertion after."""
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    pending: int = 0
    batch_stats: dict[int, BatchStatistics] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    response_stats: dict[int, ResponseStatistics] = field(default_factory=dict)
    """Per response index, for decoupled models (Triton's ``response_stats``)."""
    latency: LatencyRecorder | None = None
    """Latency summaries and histograms (``--metrics-config``); ``None`` when off."""
    memory_usage: list[MemoryUsage] = field(default_factory=list)
    """What the backend reported once the version loaded; empty when it cannot tell."""

    def record_request(self, duration_ns: int, *, failed: str | None) -> None:
        """A request's final answer: success, or failure with its ``FailureReason``."""
        if failed is None:
            success = self.success  # Duration.add inlined: this runs once per request
            success.count += 1
            success.ns += duration_ns
            if self.latency is not None:
                self.latency.request(duration_ns)
        else:
            self.fail.add(duration_ns)
            self.failures[failed] += 1
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_response(self, index: int, infer_ns: int, output_ns: int, *, kind: str) -> None:
        """The ``index``-th response of a decoupled request: ``kind`` is ``"success"``,
        ``"fail"``, ``"empty"`` (a final flag alone) or ``"cancel"``."""
        stats = self.response_stats.get(index)
        if stats is None:
            stats = self.response_stats[index] = ResponseStatistics()
        if kind == "cancel":
            stats.cancel.add(0)
            return
        if kind == "empty":
            stats.empty_response.add(infer_ns)
            return
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)
        (stats.success if kind == "success" else stats.fail).add(infer_ns + output_ns)

    def record_execution(
        self, batch_size: int, request_count: int, times: tuple[int, int, int], queue_ns: int
    ) -> None:
        """One ``execute`` of ``request_count`` requests, ``batch_size`` inferences in all."""
        # Duration.add inlined (eight of them per execution, on every request's path).
        compute_input, compute_infer, compute_output = times
        self.execution_count += 1
        self.inference_count += batch_size
        duration = self.queue
        duration.count += request_count
        duration.ns += queue_ns
        duration = self.compute_input
        duration.count += request_count
        duration.ns += compute_input
        duration = self.compute_infer
        duration.count += request_count
        duration.ns += compute_infer
        duration = self.compute_output
        duration.count += request_count
        duration.ns += compute_output
        batch = self.batch_stats.get(batch_size)
        if batch is None:
            batch = self.batch_stats[batch_size] = BatchStatistics()
        duration = batch.compute_input
        duration.count += 1
        duration.ns += compute_input
        duration = batch.compute_infer
        duration.count += 1
        duration.ns += compute_infer
        duration = batch.compute_output
        duration.count += 1
        duration.ns += compute_output
