"""Triton-mode request traces: which requests are traced, their events, the JSON trace files.

tritonserver's ``--trace-config triton,file=PATH`` and the trace settings (``level``, ``rate``,
``count``, ``log_frequency``; global and per model, see :mod:`kernel.trace_settings`) decide:

- every ``rate``-th request of a model is traced while ``count`` (``-1``: no limit) lasts;
- a traced request records Triton's timestamps (``REQUEST_START``, ``QUEUE_START``,
  ``COMPUTE_START``, ``COMPUTE_INPUT_END``, ``COMPUTE_OUTPUT_START``, ``COMPUTE_END``,
  ``INFER_RESPONSE_COMPLETE`` per response, ``REQUEST_END``) at ``TIMESTAMPS`` level, and its
  input and output tensors (``TENSOR_QUEUE_INPUT``, ``TENSOR_BACKEND_OUTPUT``) at ``TENSORS``;
- the requests an ensemble sends its steps are traced as children (``parent_id``) of the
  ensemble's trace, whatever the rate.

A finished trace goes to one writer thread, which formats it (tensor values included) and
writes Triton's JSON array: with ``log_frequency`` 0 into ``file`` (closed at shutdown), else
every ``log_frequency`` traces into ``file.0``, ``file.1``, ... as tritonserver does. Nothing is
formatted or written on the event loop, and with tracing off the request path checks one
attribute (:attr:`Tracer.active`).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel.trace_settings import TraceStore

__all__ = ["RequestTrace", "Tracer", "tensor_json"]

log = logging.getLogger("kernel.trace")

_STOP = object()


class RequestTrace:
    """One traced request: its identity and events, in the order they happened."""

    __slots__ = (
        "events",
        "id",
        "model_name",
        "model_version",
        "parent_id",
        "request_id",
        "sink",
        "tensors",
        "timestamps",
    )

    def __init__(self, trace_id: int, parent_id: int, sink: _Sink) -> None:
        self.id = trace_id
        self.parent_id = parent_id
        self.model_name = ""
        self.model_version = -1
        self.request_id = ""
        self.sink = sink
        """Where the finished trace goes."""
        self.timestamps = True
        self.tensors = False
        self.events: list[tuple[str, int] | tuple[str, str, npt.NDArray[Any]]] = []
        """``(name, ns)`` timestamps and ``(activity, tensor name, array)`` tensors."""

    def stamp(self, name: str, ns: int | None = None) -> None:
        if self.timestamps:
            self.events.append((name, time.monotonic_ns() if ns is None else ns))

    def tensor(self, activity: str, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        if self.tensors:
            for name, array in arrays.items():
                self.events.append((activity, name, array))

    def child(self) -> RequestTrace:
        """The trace of a request this one's model sends (an ensemble step): traced whatever
        the rate, at this trace's levels, into the same file."""
        assert self.sink is not None
        child = RequestTrace(self.sink.tracer.next_id(), self.id, self.sink)
        child.timestamps, child.tensors = self.timestamps, self.tensors
        return child

    def finish(self) -> None:
        """The request got its final response: hand the trace to the writer."""
        self.stamp("REQUEST_END")
        done = RequestTrace(self.id, self.parent_id, self.sink)
        done.model_name, done.model_version = self.model_name, self.model_version
        done.request_id = self.request_id
        done.events = list(self.events)  # a late event cannot race the writer
        done.timestamps = self.timestamps
        self.timestamps = self.tensors = False
        self.sink.submit(done)

    def to_json(self) -> list[dict[str, Any]]:
        """Triton's objects for this trace: the model (at ``TIMESTAMPS`` level, as
        tritonserver), then one object per event."""
        head: dict[str, Any] = {
            "id": self.id,
            "model_name": self.model_name,
            "model_version": self.model_version,
        }
        if self.request_id:
            head["request_id"] = self.request_id
        if self.parent_id:
            head["parent_id"] = self.parent_id
        objects = [head] if self.timestamps else []
        for event in self.events:
            if len(event) == 2:
                name, ns = event
                objects.append({"id": self.id, "timestamps": [{"name": name, "ns": ns}]})
            else:
                activity, tensor_name, array = event
                objects.append(
                    {"id": self.id, "activity": activity, "tensor": tensor_json(tensor_name, array)}
                )
        return objects


_DTYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
    "object": "BYTES",
    "bytes": "BYTES",
}


def _item_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"  # C++ stream formatting, as tritonserver prints
    return str(value)


def tensor_json(name: str, array: npt.NDArray[Any]) -> dict[str, str]:
    """A tensor as Triton's trace shows it: values, shape and dtype as comma-joined strings."""
    flat = np.asarray(array).reshape(-1)
    kind = array.dtype.name if array.dtype.kind not in "OSU" else "bytes"
    return {
        "name": name,
        "data": ",".join(_item_text(v) for v in flat.tolist()),
        "shape": ",".join(str(d) for d in array.shape),
        "dtype": _DTYPES.get(kind, kind.upper()),
    }


class _Sink:
    """One trace file: its writer thread and what it has written so far."""

    def __init__(self, tracer: Tracer, path: Path, log_frequency: int) -> None:
        self.tracer = tracer
        self.path = path
        self.log_frequency = log_frequency
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.failed = False
        """Set when the file could not be written: later traces are dropped, not queued."""
        self._thread = threading.Thread(
            target=self._run, name=f"trace-writer {path.name}", daemon=True
        )
        self._thread.start()

    def submit(self, trace: RequestTrace) -> None:
        if not self.failed:
            self._queue.put(trace)

    def set_log_frequency(self, log_frequency: int) -> None:
        """A new ``log_frequency`` (settings API); the writer applies it in order."""
        self._queue.put(log_frequency)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        index = 0
        written = 0
        out = None
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if isinstance(item, int):
                    if item != self.log_frequency and out is not None:
                        out.write("]")
                        out.close()
                        out, written = None, 0
                        index += bool(self.log_frequency)
                    self.log_frequency = item
                    continue
                assert isinstance(item, RequestTrace)
                if out is None:
                    target = self.path if not self.log_frequency else Path(f"{self.path}.{index}")
                    out = open(target, "w", encoding="utf-8")  # noqa: SIM115 - closed below
                    out.write("[")
                    first = True
                for obj in item.to_json():
                    out.write(("" if first else ",") + json.dumps(obj, separators=(",", ":")))
                    first = False
                written += 1
                if self.log_frequency and written >= self.log_frequency:
                    out.write("]")
                    out.close()
                    out = None
                    written = 0
                    index += 1
                else:
                    out.flush()
        except Exception:
            self.failed = True
            log.exception("writing traces to %s failed; tracing to it stops", self.path)
        finally:
            if out is not None:
                out.write("]")
                out.close()


class _Sampler:
    """One set of trace settings in force (the global ones, or a model's), with its counters."""

    def __init__(self, settings: Mapping[str, list[str]]) -> None:
        levels = settings["trace_level"]
        self.timestamps = "TIMESTAMPS" in levels
        self.tensors = "TENSORS" in levels
        self.rate = int(settings["trace_rate"][0])
        self.remaining = int(settings["trace_count"][0])
        self.log_frequency = int(settings["log_frequency"][0])
        self.on = (self.timestamps or self.tensors) and self.rate > 0 and self.remaining != 0
        self._seen = 0

    def sample(self) -> bool:
        if not self.on:
            return False
        self._seen += 1
        if self._seen % self.rate:
            return False
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self.on = False
        return True


class Tracer:
    """The server's traces: samples requests by the settings in force, collects, writes."""

    def __init__(self, store: TraceStore, file: Path | None) -> None:
        self.store = store
        self.file = file
        self.active = False
        """Whether any request may be traced: the one check on the request path."""
        self._ids = itertools.count(1)
        self._samplers: dict[str, _Sampler] = {}
        self._sink: _Sink | None = None
        self._log_frequency = 0
        self.refresh()

    def next_id(self) -> int:
        return next(self._ids)

    def refresh(self) -> None:
        """Take the settings in force (after an update): new samplers, counters from zero."""
        if self.file is None:
            self.active = False
            return
        self._samplers = {"": _Sampler(self.store.get())}
        for model in self.store.models():
            self._samplers[model] = _Sampler(self.store.get(model))
        self.active = any(s.on for s in self._samplers.values())
        frequency = self._samplers[""].log_frequency
        if frequency != self._log_frequency:
            self._log_frequency = frequency
            if self._sink is not None:
                self._sink.set_log_frequency(frequency)

    def begin(
        self, trace: RequestTrace | None, model: str, version: int, request_id: str
    ) -> RequestTrace | None:
        """The trace of an admitted request: ``trace`` (a child) or a new one if sampled."""
        if trace is None:
            sampler = self._samplers.get(model) or self._samplers.get("")
            if sampler is None or not sampler.sample():
                return None
            if self._sink is None:
                assert self.file is not None
                self._sink = _Sink(self, self.file, self._log_frequency)
            trace = RequestTrace(self.next_id(), 0, self._sink)
            trace.timestamps = sampler.timestamps
            trace.tensors = sampler.tensors
        trace.model_name, trace.model_version, trace.request_id = model, version, request_id
        return trace

    def close(self) -> None:
        """Write what is collected and close the files (at shutdown; blocks: off the loop)."""
        self.active = False
        if self._sink is not None:
            self._sink.close()
            self._sink = None
