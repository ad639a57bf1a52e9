"""The custom metrics of Python models, per server, in the Prometheus text format.

Models create families and series through ``pb_utils.MetricFamily``; they live here, one
:class:`MetricRegistry` per server, until the model drops its last handle. The metrics endpoint
exports them with :func:`metric_text`. Thread-safe; no kernel import (the registry is also the
model-side view in tests).
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Mapping

from triton_python_backend_utils import TritonModelException

__all__ = ["MetricRegistry", "metric_text", "registry_for"]

_KINDS = ("counter", "gauge", "histogram")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _number(value: float) -> str:
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...], extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in pairs]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Series:
    """One labelled series: a value, or a histogram's bucket counts, sum and count."""

    __slots__ = ("buckets", "counts", "family", "labels", "observations", "total", "users", "value")

    def __init__(
        self, family: _Family, labels: tuple[tuple[str, str], ...], buckets: list[float] | None
    ) -> None:
        self.family = family
        self.labels = labels
        self.buckets = buckets
        self.counts = [0] * len(buckets) if buckets else []
        self.value = 0.0
        self.total = 0.0
        self.observations = 0
        self.users = 0


class _Family:
    __slots__ = ("description", "kind", "name", "series", "users")

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self.series: dict[tuple[tuple[str, str], ...], _Series] = {}
        self.users = 0


class MetricRegistry:
    """The custom metric families of one server (``pb_utils.MetricFamily`` lands here)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    # -- what models do (the MetricsBackend protocol of triton_python_backend_utils) ---------

    def create_family(self, name: str, description: str, kind: int) -> object:
        """The family ``name`` (shared by every model that creates it with the same kind).

        :raises TritonModelException: for an invalid name, or a name taken by another kind.
        """
        if not _METRIC_NAME.match(name):
            raise TritonModelException(f"invalid metric family name '{name}'")
        if kind not in (0, 1, 2):
            raise TritonModelException(f"invalid metric kind {kind}")
        with self._lock:
            family = self._families.get(name)
            if family is None:
                family = self._families[name] = _Family(name, description, kind)
            elif family.kind != kind:
                raise TritonModelException(
                    f"metric family '{name}' already exists as a {_KINDS[family.kind]}"
                )
            family.users += 1
            return family

    def release_family(self, family: object) -> None:
        assert isinstance(family, _Family)
        with self._lock:
            family.users -= 1
            if family.users <= 0 and not family.series:
                self._families.pop(family.name, None)

    def create_metric(
        self, family: object, labels: Mapping[str, str], buckets: list[float] | None
    ) -> object:
        """The series of ``family`` with ``labels`` (shared when it exists).

        :raises TritonModelException: for an invalid label name, or histogram buckets that
            differ from the existing series'.
        """
        assert isinstance(family, _Family)
        for label in labels:
            if not _LABEL_NAME.match(label):
                raise TritonModelException(f"invalid metric label name '{label}'")
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = family.series.get(key)
            if series is None:
                series = family.series[key] = _Series(family, key, buckets)
                self._families.setdefault(family.name, family)
            elif series.buckets != buckets:
                raise TritonModelException(
                    f"metric '{family.name}' with labels {dict(key)} exists with other buckets"
                )
            series.users += 1
            return series

    def release_metric(self, metric: object) -> None:
        assert isinstance(metric, _Series)
        with self._lock:
            metric.users -= 1
            if metric.users <= 0:
                family = metric.family
                family.series.pop(metric.labels, None)
                if family.users <= 0 and not family.series:
                    self._families.pop(family.name, None)

    def update(self, metric: object, op: str, value: float) -> None:
        assert isinstance(metric, _Series)
        value = float(value)
        with self._lock:
            if op == "increment":
                metric.value += value
            elif op == "set":
                metric.value = value
            elif op == "observe":
                metric.total += value
                metric.observations += 1
                for index, bound in enumerate(metric.buckets or ()):
                    if value <= bound:
                        metric.counts[index] += 1
            else:
                raise TritonModelException(f"unknown metric operation '{op}'")

    def value(self, metric: object) -> float:
        assert isinstance(metric, _Series)
        with self._lock:
            return metric.value

    # -- what the metrics endpoint does ------------------------------------------------------

    def render(self) -> str:
        """The metrics endpoint's hook (``server.metric_families``): same as :meth:`text`."""
        return self.text()

    def text(self) -> str:
        """Every family with at least one series, in the Prometheus text exposition format."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._families):
                family = self._families[name]
                if not family.series:
                    continue
                lines.append(f"# HELP {name} {family.description}")
                lines.append(f"# TYPE {name} {_KINDS[family.kind]}")
                for series in family.series.values():
                    if family.kind != 2:
                        lines.append(f"{name}{_labels(series.labels)} {_number(series.value)}")
                        continue
                    # counts are cumulative already: an observation counts in every bucket
                    # whose bound it does not exceed
                    for bound, count in zip(series.buckets or (), series.counts, strict=True):
                        le = f'le="{_number(bound)}"'
                        lines.append(f"{name}_bucket{_labels(series.labels, le)} {count}")
                    inf = 'le="+Inf"'
                    lines.append(
                        f"{name}_bucket{_labels(series.labels, inf)} {series.observations}"
                    )
                    lines.append(f"{name}_sum{_labels(series.labels)} {_number(series.total)}")
                    lines.append(f"{name}_count{_labels(series.labels)} {series.observations}")
        return "\n".join(lines) + "\n" if lines else ""


# Keyed weakly by the server object: a registry lives exactly as long as its server.
_registries: weakref.WeakKeyDictionary[object, MetricRegistry] = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


def registry_for(server: object) -> MetricRegistry:
    """The custom-metrics registry of ``server`` (made on first use)."""
    with _registries_lock:
        registry = _registries.get(server)
        if registry is None:
            registry = _registries[server] = MetricRegistry()
        return registry


def metric_text(server: object) -> str:
    """The custom metrics Python models of ``server`` created, as Prometheus text.

    The metrics endpoint appends this to the server's own ``nv_*`` metrics; it is ``""`` when
    no Python model created a metric.
    """
    with _registries_lock:
        registry = _registries.get(server)
    return "" if registry is None else registry.text()
