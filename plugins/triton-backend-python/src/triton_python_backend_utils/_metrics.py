"""Custom metrics: ``MetricFamily`` and its ``Metric`` objects.

A family is a named metric of one kind (counter, gauge or histogram); a metric is one labelled
series of it. They live in the server's registry, which the metrics endpoint exports; the
objects here are the model's handles, and a series disappears when the model drops its last
handle to it (as in Triton, the model owns its metrics).
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Mapping, Sequence
from typing import ClassVar

from triton_python_backend_utils._errors import TritonModelException
from triton_python_backend_utils._runtime import MetricsBackend, current_runtime

__all__ = ["Metric", "MetricFamily", "MetricKind"]


class MetricKind(enum.IntEnum):
    """What a family measures."""

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class Metric:
    """One labelled series of a :class:`MetricFamily` (made by ``family.Metric(labels=...)``)."""

    __slots__ = ("__weakref__", "_backend", "_family", "_handle", "_kind")

    def __init__(self, family: MetricFamily, handle: object) -> None:
        self._family = family  # the family outlives its metrics
        self._backend = family._backend
        self._kind = family._kind
        self._handle = handle
        weakref.finalize(self, self._backend.release_metric, handle)

    def increment(self, value: float) -> None:
        """Add ``value`` (counters: not negative; not for histograms).

        :raises TritonModelException: on a histogram or a negative counter increment.
        """
        if self._kind == MetricKind.HISTOGRAM:
            raise TritonModelException("Incrementing a histogram metric is not supported")
        if self._kind == MetricKind.COUNTER and value < 0:
            raise TritonModelException("A counter metric cannot be incremented by a negative value")
        self._backend.update(self._handle, "increment", float(value))

    def set(self, value: float) -> None:
        """Set the value (gauges only).

        :raises TritonModelException: on a counter or a histogram.
        """
        if self._kind != MetricKind.GAUGE:
            kind = self._kind.name.lower()
            raise TritonModelException(f"Setting a {kind} metric is not supported")
        self._backend.update(self._handle, "set", float(value))

    def observe(self, value: float) -> None:
        """Record one observation (histograms only).

        :raises TritonModelException: on a counter or a gauge.
        """
        if self._kind != MetricKind.HISTOGRAM:
            kind = self._kind.name.lower()
            raise TritonModelException(f"Observing a {kind} metric is not supported")
        self._backend.update(self._handle, "observe", float(value))

    def value(self) -> float:
        """The current value (counters and gauges).

        :raises TritonModelException: on a histogram.
        """
        if self._kind == MetricKind.HISTOGRAM:
            raise TritonModelException("Getting the value of a histogram metric is not supported")
        return self._backend.value(self._handle)


class MetricFamily:
    """A custom metric family: ``MetricFamily(name, description, kind=MetricFamily.COUNTER)``."""

    __slots__ = ("__weakref__", "_backend", "_handle", "_kind", "_name")

    COUNTER: ClassVar[MetricKind] = MetricKind.COUNTER
    GAUGE: ClassVar[MetricKind] = MetricKind.GAUGE
    HISTOGRAM: ClassVar[MetricKind] = MetricKind.HISTOGRAM

    def __init__(self, name: str, description: str, kind: int) -> None:
        backend: MetricsBackend = current_runtime().metrics
        self._backend = backend
        self._kind = MetricKind(kind)
        self._name = str(name)
        self._handle = backend.create_family(self._name, str(description), int(self._kind))
        weakref.finalize(self, backend.release_family, self._handle)

    def Metric(  # noqa: N802 - Triton's name
        self, labels: Mapping[str, str] | None = None, buckets: Sequence[float] | None = None
    ) -> Metric:
        """A series of this family with ``labels``; histograms need their bucket bounds.

        :raises TritonModelException: for a histogram without buckets, or buckets elsewhere.
        """
        if self._kind == MetricKind.HISTOGRAM and not buckets:
            raise TritonModelException("A histogram metric needs its 'buckets'")
        if self._kind != MetricKind.HISTOGRAM and buckets:
            raise TritonModelException("Only histogram metrics take 'buckets'")
        clean = {str(k): str(v) for k, v in (labels or {}).items()}
        bounds = sorted(float(b) for b in buckets) if buckets else None
        return Metric(self, self._backend.create_metric(self._handle, clean, bounds))
