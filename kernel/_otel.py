"""OpenTelemetry-mode traces: Triton's spans, exported over OTLP/HTTP by the OpenTelemetry SDK.

``--trace-config mode=opentelemetry`` turns the traces :mod:`kernel._tracing` collects into the
spans tritonserver's OpenTelemetry mode makes (its ``docs/user_guide/trace.md``):

- ``InferRequest``: the top-level span of a request the server received, a child of the
  client's span when the client sent a W3C ``traceparent`` (HTTP header or gRPC metadata);
- ``<model name>``: the model span (``REQUEST_START``, ``QUEUE_START``,
  ``INFER_RESPONSE_COMPLETE``, ``REQUEST_END`` events; attributes ``triton.model_name``,
  ``triton.model_version``, ``triton.trace_id``, ``triton.trace_parent_id`` and
  ``triton.request_id`` when the request has an id), a child of ``InferRequest``, or of the
  parent's model span for an ensemble step or a BLS call;
- ``compute``: a child of the model span (``COMPUTE_START``, ``COMPUTE_INPUT_END``,
  ``COMPUTE_OUTPUT_START``, ``COMPUTE_END``).

Every span is of kind ``SERVER``, from the tracer ``triton-server``, with the resource
``service.name=triton-inference-server`` unless ``OTEL_RESOURCE_ATTRIBUTES`` or
``opentelemetry,resource=<key>=<value>`` say otherwise. Timestamps are the monotonic ones the
kernel takes, moved to the wall clock by one offset (as tritonserver does).

The spans are made in one thread from finished traces and handed to the SDK's
``BatchSpanProcessor`` (its ``bsp_*`` settings), whose own thread exports them; nothing of this
runs on the event loop, and shutdown flushes what is queued. The SDK is the optional extra
``triton-kernel[otel]``, imported only in this mode.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from kernel._errors import KernelError, Status

if TYPE_CHECKING:
    from kernel._tracing import RequestTrace, Tracer

__all__ = ["DEFAULT_URL", "OtelConfig", "OtelSink"]

log = logging.getLogger("kernel.trace")

DEFAULT_URL = "http://localhost:4318/v1/traces"
"""Where spans go without ``opentelemetry,url=`` (tritonserver's default)."""
SERVICE_NAME = "triton-inference-server"
TRACER_NAME = "triton-server"

_MISSING = "OpenTelemetry trace mode needs the OpenTelemetry SDK: pip install 'triton-kernel[otel]'"
_STOP = object()
_COMPUTE = ("COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END")


@dataclass
class OtelConfig:
    """``--trace-config opentelemetry,<key>=<value>``: the exporter, resource and processor."""

    url: str = DEFAULT_URL
    resource: dict[str, str] = field(default_factory=dict)
    bsp: dict[str, int] = field(default_factory=dict)
    """``max_queue_size``, ``schedule_delay_millis``, ``max_export_batch_size`` when given
    (else the SDK's, which read the ``OTEL_BSP_*`` variables)."""

    @classmethod
    def parse(cls, pairs: Sequence[tuple[str, str]]) -> OtelConfig:
        """:raises KernelError: ``INVALID_ARG`` for a setting that is wrong."""
        config = cls()
        names = {
            "bsp_max_queue_size": "max_queue_size",
            "bsp_schedule_delay": "schedule_delay_millis",
            "bsp_max_export_batch_size": "max_export_batch_size",
        }
        for key, value in pairs:
            if key == "url":
                # tritonserver's exporter takes host:port/path as well as a full URL
                config.url = value if "://" in value else f"http://{value}"
            elif key == "resource":
                name, _, text = value.partition("=")
                config.resource[name] = text
            elif key in names:
                number = int(value) if value.isdigit() else 0
                if number <= 0:
                    raise KernelError(
                        Status.INVALID_ARG, f"'{key}' takes a positive integer, got '{value}'"
                    )
                config.bsp[names[key]] = number
            else:
                raise KernelError(Status.INVALID_ARG, f"unknown OpenTelemetry setting '{key}'")
        queue_size = config.bsp.get("max_queue_size", 2048)
        batch = config.bsp.get("max_export_batch_size")
        if batch is None:
            # the SDK's default batch (512) must fit a smaller queue
            config.bsp["max_export_batch_size"] = min(512, queue_size)
        elif batch > queue_size:
            raise KernelError(
                Status.INVALID_ARG,
                "bsp_max_export_batch_size must be less than or equal to bsp_max_queue_size",
            )
        return config


class OtelSink:
    """Finished traces in, spans out: one thread builds them, the SDK's exports them."""

    def __init__(self, tracer: Tracer, config: OtelConfig) -> None:
        self.tracer = tracer
        attributes: dict[str, Any] = {"service.name": SERVICE_NAME}
        attributes.update(OTELResourceDetector().detect().attributes)
        attributes.update(config.resource)
        self._ids = _PresetIds()
        # The rate, count and a client's context decide what is traced, as in tritonserver:
        # the SDK samples everything it is given (a parent's "not sampled" flag included).
        self._provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=Resource.create(attributes),
            shutdown_on_exit=False,
            id_generator=self._ids,
        )
        exporter = OTLPSpanExporter(endpoint=config.url, timeout=10)
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=config.bsp.get("max_queue_size"),
                schedule_delay_millis=config.bsp.get("schedule_delay_millis"),
                max_export_batch_size=config.bsp.get("max_export_batch_size"),
            )
        )
        self._otel = self._provider.get_tracer(TRACER_NAME)
        # monotonic ns + offset = wall-clock ns, taken once (Triton's time_offset_)
        self._offset = time.time_ns() - time.monotonic_ns()
        # Bounded like the SDK's own queue: clients sending a traceparent on every request
        # cannot grow it past what the span thread keeps up with; the excess is dropped.
        self._queue: queue.Queue[object] = queue.Queue(config.bsp.get("max_queue_size", 2048))
        self.dropped = 0
        self.failed = False
        self._thread = threading.Thread(target=self._run, name="trace-otel", daemon=True)
        self._thread.start()

    def submit(self, trace: RequestTrace) -> None:
        if self.failed:
            return
        try:
            self._queue.put_nowait(trace)
        except queue.Full:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # the 1st, 2nd, 4th, 8th... drop
                log.warning("OpenTelemetry span queue full: %d traces dropped", self.dropped)

    def set_log_frequency(self, log_frequency: int) -> None:
        """Files only: nothing to do for spans."""

    def close(self) -> None:
        while self._thread.is_alive():  # a full queue drains unless the thread failed
            try:
                self._queue.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._provider.shutdown()  # flushes the batch processor, then the exporter

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._export(item)  # type: ignore[arg-type]
            except Exception:
                log.exception("making OpenTelemetry spans failed; tracing stops")
                self.failed = True
                return

    def _export(self, trace: RequestTrace) -> None:
        """The spans of one finished trace (its children's come on their own)."""
        stamps = sorted((e for e in trace.events if len(e) == 2), key=lambda e: e[1])
        if not stamps:
            return
        wall = self._offset
        start, end = stamps[0][1] + wall, stamps[-1][1] + wall
        root = None
        if trace.parent_id == 0:
            parent = None
            if trace.remote is not None:
                trace_id, span_id, flags, state = trace.remote
                parent = api.set_span_in_context(
                    NonRecordingSpan(
                        SpanContext(
                            trace_id,
                            span_id,
                            is_remote=True,
                            trace_flags=TraceFlags(flags),
                            trace_state=_trace_state(state),
                        )
                    )
                )
            else:
                self._ids.trace_id = trace.otel_trace  # fixed if children name it
            root = self._otel.start_span(
                "InferRequest", context=parent, kind=SpanKind.SERVER, start_time=start
            )
            context = api.set_span_in_context(root)
        else:
            context = api.set_span_in_context(
                NonRecordingSpan(
                    SpanContext(
                        trace.otel_trace,
                        trace.parent_span,
                        is_remote=False,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED),
                    )
                )
            )
        attributes: dict[str, Any] = {
            "triton.model_name": trace.model_name,
            "triton.model_version": trace.model_version,
            "triton.trace_id": trace.id,
            "triton.trace_parent_id": trace.parent_id,
        }
        if trace.request_id:
            attributes["triton.request_id"] = trace.request_id
        self._ids.span_id = trace.span_id
        model = self._otel.start_span(
            trace.model_name,
            context=context,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=start,
        )
        compute = None
        for name, ns in stamps:
            at = ns + wall
            if name == "COMPUTE_START":
                compute = self._otel.start_span(
                    "compute",
                    context=api.set_span_in_context(model),
                    kind=SpanKind.SERVER,
                    start_time=at,
                )
            if compute is not None and name in _COMPUTE:
                compute.add_event(name, timestamp=at)
                if name == "COMPUTE_END":
                    compute.end(end_time=at)
                    compute = None
            else:
                model.add_event(name, timestamp=at)
        if compute is not None:
            compute.end(end_time=end)
        model.end(end_time=end)
        if root is not None:
            root.end(end_time=end)


def _trace_state(header: str) -> TraceState | None:
    return TraceState.from_header([header]) if header else None


class _PresetIds(IdGenerator):
    """The SDK's id generator, except for ids fixed in advance (see RequestTrace.child): set
    one just before the span that must carry it is started (in the one span-making thread)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        preset, self.span_id = self.span_id, 0
        return preset or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        preset, self.trace_id = self.trace_id, 0
        return preset or self._random.generate_trace_id()
