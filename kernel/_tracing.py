"""Triton-mode request traces: which requests are traced, their events, the JSON trace files.

tritonserver's ``--trace-config triton,file=PATH`` and the trace settings (``level``, ``rate``,
``count``, ``log_frequency``; global and per model, see :mod:`kernel._trace_settings`) decide:

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

With ``--trace-config mode=opentelemetry`` the same traces become OpenTelemetry spans instead
(:mod:`kernel._otel`, built in its own thread and exported over OTLP/HTTP), and a request whose
client sent a W3C ``traceparent`` is traced whatever the rate, as a continuation of the client's
trace (the frontends read that header only in this mode: :attr:`Tracer.propagates`).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel._trace_settings import TraceStore

__all__ = ["RequestTrace", "TraceSink", "Tracer", "tensor_json"]

log = logging.getLogger("kernel.trace")

_STOP = object()

MAX_PENDING_TRACES = 10_000
"""Finished traces waiting for the writer thread (a slow disk) beyond this are dropped and
counted, so tracing every request cannot grow the server's memory without bound."""
_OTEL_MISSING = (
    "OpenTelemetry trace mode needs the OpenTelemetry SDK: pip install 'triton-kernel[otel]'"
)

# W3C trace context: version-traceid-parentid-flags, lower-case hex; a later version may add
# fields after a dash (https://www.w3.org/TR/trace-context/#traceparent-header).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class TraceSink(Protocol):
    """Where finished traces go: Triton's JSON file writer or the OpenTelemetry exporter."""

    tracer: Tracer

    def submit(self, trace: RequestTrace) -> None:
        """Take a finished trace (on the event loop: must not block)."""
        ...

    def set_log_frequency(self, log_frequency: int) -> None: ...

    def close(self) -> None:
        """Write or export what was submitted, then stop (blocks: call off the loop)."""
        ...


class RequestTrace:
    """One traced request: its identity and events, in the order they happened."""

    __slots__ = (
        "events",
        "id",
        "model_name",
        "model_version",
        "otel_trace",
        "parent_id",
        "parent_span",
        "remote",
        "request_id",
        "sink",
        "span_id",
        "tensors",
        "timestamps",
    )

    def __init__(self, trace_id: int, parent_id: int, sink: TraceSink | None) -> None:
        self.id = trace_id
        """Triton's trace id (0: a client's context not yet taken by :meth:`Tracer.begin`)."""
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
        self.remote: tuple[int, int, int, str] | None = None
        """The client's W3C context (trace id, span id, flags, tracestate) this trace continues."""
        # OpenTelemetry ids fixed early, only once a child trace needs its parent's: the
        # 128-bit trace id of the whole tree and this trace's model span id (0: not fixed).
        self.otel_trace = 0
        self.span_id = 0
        self.parent_span = 0
        """The model span id of the parent trace (children only)."""

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
        # The child's spans may be exported before this trace's: they name their parent by
        # ids fixed now (a few random bits; only traced requests with children pay this).
        if not self.otel_trace:
            self.otel_trace = self.remote[0] if self.remote else random.getrandbits(128) or 1
        if not self.span_id:
            self.span_id = random.getrandbits(64) or 1
        child.otel_trace = self.otel_trace
        child.parent_span = self.span_id
        return child

    def finish(self) -> None:
        """The request got its final response: hand the trace to the writer."""
        if self.sink is None:  # a client's context that tracing (turned off) never took
            return
        self.stamp("REQUEST_END")
        done = RequestTrace(self.id, self.parent_id, self.sink)
        done.model_name, done.model_version = self.model_name, self.model_version
        done.request_id = self.request_id
        done.events = list(self.events)  # a late event cannot race the writer
        done.timestamps = self.timestamps
        done.remote = self.remote
        done.otel_trace, done.span_id = self.otel_trace, self.span_id
        done.parent_span = self.parent_span
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
        self._lock = threading.Lock()
        self._submitted = 0
        self._written = 0  # changed by the writer thread only
        self.dropped = 0
        """Traces dropped because :data:`MAX_PENDING_TRACES` were waiting to be written."""
        self.failed = False
        """Set when the file could not be written: later traces are dropped, not queued."""
        self._thread = threading.Thread(
            target=self._run, name=f"trace-writer {path.name}", daemon=True
        )
        self._thread.start()

    def submit(self, trace: RequestTrace) -> None:
        if self.failed:
            return
        with self._lock:
            full = self._submitted - self._written >= MAX_PENDING_TRACES
            if full:
                self.dropped += 1
                dropped = self.dropped
            else:
                self._submitted += 1
        if not full:
            self._queue.put(trace)
        elif dropped == 1 or dropped % 1000 == 0:
            log.warning(
                "%d traces dropped: %d are waiting to be written to %s",
                dropped,
                MAX_PENDING_TRACES,
                self.path,
            )

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
                self._written += 1
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
        self.log_frequency = int(settings.get("log_frequency", ["0"])[0])
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

    def __init__(
        self,
        store: TraceStore,
        file: Path | None,
        *,
        mode: str = "triton",
        opentelemetry: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``mode`` ``opentelemetry`` exports spans (``opentelemetry``: the
        ``--trace-config opentelemetry,<key>=<value>`` pairs) instead of writing ``file``.

        :raises KernelError: ``INVALID_ARG`` in OpenTelemetry mode when the ``otel`` extra is
            not installed or a setting is wrong.
        """
        self.store = store
        self.file = file
        self.otel = mode == "opentelemetry"
        self._otel_config: Any = None
        if self.otel:
            try:
                from kernel._otel import OtelConfig
            except ImportError:
                raise KernelError(Status.INVALID_ARG, _OTEL_MISSING) from None
            self._otel_config = OtelConfig.parse(opentelemetry)
        self.active = False
        """Whether any request may be traced: the one check on the request path."""
        self.propagates = False
        """OpenTelemetry mode with a level on: a client's ``traceparent`` starts a trace, so the
        frontends read that header (and only then)."""
        self._ids = itertools.count(1)
        self._samplers: dict[str, _Sampler] = {}
        self._sink: TraceSink | None = None
        self._log_frequency = 0
        self.refresh()

    def next_id(self) -> int:
        return next(self._ids)

    def refresh(self) -> None:
        """Take the settings in force (after an update): new samplers, counters from zero."""
        if self.file is None and not self.otel:
            self.active = False
            return
        self._samplers = {"": _Sampler(self.store.get())}
        for model in self.store.models():
            self._samplers[model] = _Sampler(self.store.get(model))
        if self.otel:  # spans carry timestamps only (Triton: no TENSORS level in this mode)
            for sampler in self._samplers.values():
                sampler.tensors = False
                sampler.on = sampler.on and sampler.timestamps
            self.propagates = any(s.timestamps for s in self._samplers.values())
        self.active = any(s.on for s in self._samplers.values()) or self.propagates
        frequency = self._samplers[""].log_frequency
        if frequency != self._log_frequency:
            self._log_frequency = frequency
            if self._sink is not None:
                self._sink.set_log_frequency(frequency)

    def continued(
        self, traceparent: str | None, tracestate: str | None = None
    ) -> RequestTrace | None:
        """The trace a client's W3C ``traceparent`` (and ``tracestate``) asks to continue, to
        set as the request's :attr:`~kernel._inference.InferenceRequest.trace` before it is
        submitted; ``None`` for no header or a malformed one (then the rate decides)."""
        if not traceparent:
            return None
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match is None:
            return None
        version, trace_id, span_id, flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest):
            return None
        remote = (int(trace_id, 16), int(span_id, 16), int(flags, 16), tracestate or "")
        if not remote[0] or not remote[1]:
            return None
        trace = RequestTrace(0, 0, None)
        trace.remote = remote
        return trace

    def begin(
        self, trace: RequestTrace | None, model: str, version: int, request_id: str
    ) -> RequestTrace | None:
        """The trace of an admitted request: ``trace`` (a child) or a new one if sampled (or
        if ``trace`` is a client's context, see :meth:`continued`)."""
        if trace is None or not trace.id:
            sampler = self._samplers.get(model) or self._samplers.get("")
            if sampler is None:
                return None
            if trace is None:
                if not sampler.sample():
                    return None
                remote = None
            elif not (self.propagates and sampler.timestamps):
                return None  # a client's context, but tracing is OFF for this model
            else:
                remote = trace.remote
            sink = self._sink or self._open_sink()
            if sink is None:
                return None
            trace = RequestTrace(self.next_id(), 0, sink)
            trace.timestamps = sampler.timestamps
            trace.tensors = sampler.tensors
            trace.remote = remote
        trace.model_name, trace.model_version, trace.request_id = model, version, request_id
        return trace

    def _open_sink(self) -> TraceSink | None:
        """The sink, made on the first trace; ``None`` (and tracing off) if it cannot be."""
        sink: TraceSink
        try:
            if self.otel:
                from kernel._otel import OtelSink

                sink = OtelSink(self, self._otel_config)
            else:
                assert self.file is not None
                sink = _Sink(self, self.file, self._log_frequency)
        except Exception:
            log.exception("traces cannot be exported; tracing stops")
            self.file, self.otel = None, False
            self.active = self.propagates = False
            return None
        self._sink = sink
        return sink

    def close(self) -> None:
        """Write what is collected and close the files (at shutdown; blocks: off the loop)."""
        self.active = False
        self.propagates = False
        if self._sink is not None:
            self._sink.close()
            self._sink = None
