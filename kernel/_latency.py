"""Latency summaries and histograms: tritonserver's ``--metrics-config`` latency families.

``summary_latencies=true`` adds, per model version, Prometheus summaries of the request, queue
and compute durations in microseconds (``nv_inference_request_summary_us`` ...), with
tritonserver's quantiles (``summary_quantiles``, default ``0.5,0.9,0.95,0.99,0.999``) over a
sliding window of recent observations. ``histogram_latencies=true`` adds
``nv_inference_first_response_histogram_ms``: the time to a decoupled request's first response,
in tritonserver's default buckets. Off (the default), nothing is recorded: the statistics check
one attribute.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "Histogram",
    "LatencyConfig",
    "LatencyRecorder",
    "SlidingSummary",
    "parse_metrics_config",
]

_DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
_DEFAULT_BUCKETS = (100.0, 500.0, 2000.0, 5000.0)
_WINDOW_SECS = 60.0
_WINDOW_SAMPLES = 4096


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """What ``--metrics-config`` asked for."""

    summaries: bool = False
    histograms: bool = False
    quantiles: tuple[float, ...] = _DEFAULT_QUANTILES
    buckets: tuple[float, ...] = _DEFAULT_BUCKETS


def _bool(key: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "on", "yes"):
        return True
    if lowered in ("false", "0", "off", "no"):
        return False
    raise ValueError(f"--metrics-config {key}: expected true or false, got '{text}'")


def parse_metrics_config(settings: Mapping[str, str]) -> LatencyConfig:
    """``--metrics-config`` settings (``summary_latencies``, ``histogram_latencies``,
    ``summary_quantiles=<q>:<error>,...``, ``counter_latencies``).

    :raises ValueError: a setting this server does not know, or a value it cannot take.
    """
    summaries = histograms = False
    quantiles: tuple[float, ...] = _DEFAULT_QUANTILES
    for key, value in settings.items():
        if key == "summary_latencies":
            summaries = _bool(key, value)
        elif key == "histogram_latencies":
            histograms = _bool(key, value)
        elif key == "counter_latencies":
            if not _bool(key, value):
                raise ValueError("--metrics-config counter_latencies=false is not supported")
        elif key == "summary_quantiles":
            try:
                parsed = tuple(float(item.split(":")[0]) for item in value.split(",") if item)
            except ValueError:
                raise ValueError(
                    f"--metrics-config summary_quantiles: bad value '{value}'"
                ) from None
            if not parsed or not all(0.0 <= q <= 1.0 for q in parsed):
                raise ValueError(f"--metrics-config summary_quantiles: bad value '{value}'")
            quantiles = parsed
        else:
            raise ValueError(f"--metrics-config: unknown setting '{key}'")
    return LatencyConfig(summaries=summaries, histograms=histograms, quantiles=quantiles)


@dataclass(slots=True)
class SlidingSummary:
    """A Prometheus summary: count and sum since start, quantiles over a recent window."""

    count: int = 0
    total: int = 0
    window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=_WINDOW_SAMPLES))

    def observe(self, value: int, now: float) -> None:
        self.count += 1
        self.total += value
        self.window.append((now, value))

    def quantiles(self, wanted: tuple[float, ...], now: float) -> list[tuple[float, float]]:
        """``(quantile, value)`` over the observations of the last minute (NaN if none)."""
        while self.window and now - self.window[0][0] > _WINDOW_SECS:
            self.window.popleft()
        values = sorted(v for _, v in self.window)
        if not values:
            return [(q, float("nan")) for q in wanted]
        last = len(values) - 1
        return [(q, float(values[min(last, int(q * len(values)))])) for q in wanted]


@dataclass(slots=True)
class Histogram:
    """A Prometheus histogram with fixed upper bounds (``+Inf`` implied)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` per bucket, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((f"{bound:g}", running))
        out.append(("+Inf", self.count))
        return out


SUMMARIES = ("request", "queue", "compute_input", "compute_infer", "compute_output")


class LatencyRecorder:
    """One model version's summaries (microseconds) and first-response histogram (ms)."""

    __slots__ = ("config", "first_response", "summaries")

    def __init__(self, config: LatencyConfig, *, decoupled: bool) -> None:
        """The first-response histogram only for a ``decoupled`` model, as tritonserver."""
        self.config = config
        self.summaries = (
            {name: SlidingSummary() for name in SUMMARIES} if config.summaries else None
        )
        self.first_response = Histogram(config.buckets) if config.histograms and decoupled else None

    def request(self, duration_ns: int) -> None:
        if self.summaries is not None:
            self.summaries["request"].observe(duration_ns // 1000, time.monotonic())

    def execution(self, queue_ns: list[int], times: tuple[int, int, int]) -> None:
        """One batch: each request's queue time; the batch's compute split counts for each."""
        summaries = self.summaries
        if summaries is None:
            return
        now = time.monotonic()
        for value in queue_ns:
            summaries["queue"].observe(value // 1000, now)
        for name, ns in zip(SUMMARIES[2:], times, strict=True):
            for _ in queue_ns:
                summaries[name].observe(ns // 1000, now)

    def first(self, duration_ns: int) -> None:
        if self.first_response is not None:
            self.first_response.observe(duration_ns / 1e6)
