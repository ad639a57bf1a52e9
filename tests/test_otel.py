"""OpenTelemetry-mode traces: Triton's spans, received by a real OTLP/HTTP receiver in the test.

The receiver decodes each ``ExportTraceServiceRequest`` with opentelemetry-proto; the server
exports with the OpenTelemetry SDK's OTLP/HTTP exporter and flushes at shutdown, so every
assertion reads what arrived once the server stopped.
"""

from __future__ import annotations

import gzip
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from kernel._cli import build_parser
from kernel._errors import KernelError
from kernel._serve_command import options_from_args
from kernel._trace_settings import TraceStore
from kernel._tracing import Tracer
from kernel.testing import ServerThread, write_model

from .test_scheduling_ensemble import add_models, pair

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
ON = {"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]}


class _Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, str]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                assert length < 16 * 1024 * 1024
                body = self.rfile.read(length)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                message = ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for resource_spans in message.resource_spans:
                    receiver.resources.append(
                        {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    )
                    for scope_spans in resource_spans.scope_spans:
                        assert scope_spans.scope.name == "triton-server"
                        receiver.spans.extend(scope_spans.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    try:
        yield server
    finally:
        server.close()


def _otel(receiver: _Receiver, *extra: tuple[str, str], **settings: list[str]) -> dict[str, Any]:
    return {
        "trace_mode": "opentelemetry",
        "trace_opentelemetry": [("url", receiver.url), ("bsp_schedule_delay", "50"), *extra],
        "trace_settings": settings or ON,
    }


def _attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        out[attribute.key] = getattr(value, value.WhichOneof("value"))
    return out


def _events(span: Span) -> list[str]:
    return [event.name for event in span.events]


def _add_inputs(module: Any) -> list[Any]:
    inputs = [module.InferInput(n, [1, 4], "FP32") for n in ("INPUT0", "INPUT1")]
    for item in inputs:
        item.set_data_from_numpy(np.ones((1, 4), np.float32))
    return inputs


def _children(spans: list[Span], parent: Span) -> list[Span]:
    return [
        s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id
    ]


def _check_request(spans: list[Span], model: str, request_id: str) -> tuple[Span, Span, Span]:
    """The InferRequest / model / compute spans of the request ``request_id``."""
    span = next(
        s for s in spans if s.name == model and _attrs(s).get("triton.request_id") == request_id
    )
    attrs = _attrs(span)
    assert attrs["triton.model_name"] == model
    assert attrs["triton.model_version"] == 1
    assert attrs["triton.trace_id"] >= 1
    assert span.kind == Span.SPAN_KIND_SERVER
    events = _events(span)
    assert events[:2] == ["REQUEST_START", "QUEUE_START"] and events[-1] == "REQUEST_END"
    (compute,) = [c for c in _children(spans, span) if c.name == "compute"]
    assert _events(compute) == [
        "COMPUTE_START",
        "COMPUTE_INPUT_END",
        "COMPUTE_OUTPUT_START",
        "COMPUTE_END",
    ]
    assert span.start_time_unix_nano <= compute.start_time_unix_nano
    assert compute.end_time_unix_nano <= span.end_time_unix_nano
    roots = [s for s in spans if s.span_id == span.parent_span_id]
    return (roots[0] if roots else span), span, compute


def test_http_request_continues_the_clients_trace(repo: Path, receiver: _Receiver) -> None:
    add_models(repo)
    extra = [("resource", "service.name=my-triton"), ("resource", "deployment.environment=t")]
    with ServerThread(repo, **_otel(receiver, *extra)) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            http.infer(
                "add",
                _add_inputs(httpclient),
                request_id="h-1",
                headers={"traceparent": TRACEPARENT},
            )
            http.infer("add", _add_inputs(httpclient), request_id="h-2")  # a trace of its own
        finally:
            http.close()
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert receiver.resources[0]["service.name"] == "my-triton"
    assert receiver.resources[0]["deployment.environment"] == "t"
    spans = receiver.spans
    root, model, _ = _check_request(spans, "add", "h-1")
    assert root.name == "InferRequest" and root.kind == Span.SPAN_KIND_SERVER
    assert root.trace_id.hex() == CLIENT_TRACE
    assert root.parent_span_id.hex() == CLIENT_SPAN
    assert _attrs(model)["triton.trace_parent_id"] == 0
    other_root, _, _ = _check_request(spans, "add", "h-2")
    assert other_root.name == "InferRequest" and other_root.parent_span_id == b""
    assert other_root.trace_id.hex() != CLIENT_TRACE


def test_settings_api_shows_tritons_opentelemetry_settings(
    repo: Path, receiver: _Receiver, kt_config: Any
) -> None:
    """As tritonserver 2.51 answers: no file or log frequency, the OpenTelemetry settings
    given (the last resource) and the batch span processor's with their defaults."""
    write_model(repo, "a", kt_config("addsub"))
    extra = [("resource", "a=b"), ("resource", "c=d"), ("bsp_max_queue_size", "100")]
    options = _otel(receiver, *extra)
    with ServerThread(repo, **options) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            want = {
                "trace_level": ["TIMESTAMPS"],
                "trace_rate": "1",
                "trace_count": "-1",
                "trace_mode": "opentelemetry",
                "url": receiver.url,
                "resource": "c=d",
                "bsp_max_queue_size": "100",
                "bsp_schedule_delay": "50",
                "bsp_max_export_batch_size": "512",
            }
            assert http.get_trace_settings() == want
            assert http.get_trace_settings("a") == want
            changed = http.update_trace_settings("a", {"trace_rate": "5"})
            assert changed["trace_rate"] == "5" and "log_frequency" not in changed
            with pytest.raises(Exception, match="can not be updated through network"):
                http.update_trace_settings(settings={"trace_file": "/tmp/x"})
            got = grpc.get_trace_settings(as_json=True)["settings"]
            assert {k: v["value"] for k, v in got.items()} == {
                k: v if isinstance(v, list) else [v] for k, v in want.items()
            }
        finally:
            http.close()
            grpc.close()


def test_grpc_ensemble_steps_are_children_of_the_ensembles_span(
    repo: Path, receiver: _Receiver
) -> None:
    add_models(repo)
    with ServerThread(repo, **_otel(receiver)) as server:
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            inputs = [grpcclient.InferInput(n, [2, 4], "FP32") for n in ("A", "B")]
            for item, (_, value) in zip(inputs, sorted(pair().items()), strict=True):
                item.set_data_from_numpy(value)
            grpc.infer("e", inputs, request_id="g-1", headers={"traceparent": TRACEPARENT})
        finally:
            grpc.close()
    spans = receiver.spans
    ensemble = next(s for s in spans if s.name == "e")
    (root,) = [s for s in spans if s.span_id == ensemble.parent_span_id]
    assert root.name == "InferRequest" and root.parent_span_id.hex() == CLIENT_SPAN
    steps = [s for s in _children(spans, ensemble) if s.name != "compute"]
    assert sorted(s.name for s in steps) == ["add", "ident"]
    for step in steps:
        assert step.trace_id.hex() == CLIENT_TRACE
        assert _attrs(step)["triton.trace_parent_id"] == _attrs(ensemble)["triton.trace_id"]
        _check_request(spans, step.name, "g-1")
    assert {s.trace_id.hex() for s in spans} == {CLIENT_TRACE}


def test_grpc_stream_requests_continue_the_streams_trace(
    repo: Path, receiver: _Receiver, kt_config: Any
) -> None:
    """ModelStreamInfer: the stream's metadata carries the client's context for each request."""
    import queue

    write_model(repo, "a", kt_config("addsub"))
    results: queue.Queue[Any] = queue.Queue()
    with ServerThread(repo, **_otel(receiver)) as server:
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            grpc.start_stream(
                lambda result, error: results.put(error or result),
                headers={"traceparent": TRACEPARENT},
            )
            for index in range(2):
                grpc.async_stream_infer("a", _add_inputs(grpcclient), request_id=f"s-{index}")
            for _ in range(2):
                assert not isinstance(results.get(timeout=30), Exception)
            grpc.stop_stream()
        finally:
            grpc.close()
    for index in range(2):
        root, _, _ = _check_request(receiver.spans, "a", f"s-{index}")
        assert root.name == "InferRequest" and root.parent_span_id.hex() == CLIENT_SPAN
        assert root.trace_id.hex() == CLIENT_TRACE


_BLS_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = [pb_utils.get_input_tensor_by_name(request, n) for n in ("INPUT0", "INPUT1")]
            call = pb_utils.InferenceRequest(
                model_name="add",
                inputs=inputs,
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                trace=request.trace(),
            )
            result = call.exec()
            responses.append(pb_utils.InferenceResponse(output_tensors=result.output_tensors()))
        return responses
"""


def test_bls_call_is_a_child_span_of_the_calling_model(
    repo: Path, receiver: _Receiver, kt_config: Any
) -> None:
    write_model(repo, "add", kt_config("addsub"))
    config = kt_config("addsub", backend="python").replace(
        'parameters { key: "behaviour"',
        'parameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }\n'
        'parameters { key: "behaviour"',
    )
    write_model(repo, "bls", config)
    (repo / "bls" / "1" / "model.py").write_text(_BLS_MODEL)
    with ServerThread(repo, **_otel(receiver)) as server:
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            grpc.infer("bls", _add_inputs(grpcclient), request_id="b-1")
        finally:
            grpc.close()
    spans = receiver.spans
    root, outer, compute = _check_request(spans, "bls", "b-1")
    assert root.name == "InferRequest"
    inner = next(s for s in spans if s.name == "add")
    assert inner.parent_span_id == outer.span_id and inner.trace_id == outer.trace_id
    # the call ran inside the outer request's compute
    assert compute.start_time_unix_nano <= inner.start_time_unix_nano


def test_rate_zero_traces_only_requests_with_a_client_context(
    repo: Path, receiver: _Receiver, kt_config: Any
) -> None:
    """tritonserver's advice: ``rate=0`` traces only what a client asked to continue."""
    write_model(repo, "a", kt_config("addsub"))
    settings = {"trace_level": ["TIMESTAMPS"], "trace_rate": ["0"]}
    with ServerThread(repo, **_otel(receiver, **settings)) as server:
        assert server.server.tracer.propagates
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            for _ in range(3):
                http.infer("a", _add_inputs(httpclient), request_id="plain")
            http.infer(
                "a",
                _add_inputs(httpclient),
                request_id="asked",
                headers={"traceparent": TRACEPARENT},
            )
            bad = {"traceparent": "00-" + "0" * 32 + f"-{CLIENT_SPAN}-01"}  # invalid: ignored
            http.infer("a", _add_inputs(httpclient), request_id="bad", headers=bad)
        finally:
            http.close()
    ids = {_attrs(s).get("triton.request_id") for s in receiver.spans if s.name == "a"}
    assert ids == {"asked"}


def test_level_off_exports_nothing_and_reads_no_header(
    repo: Path, receiver: _Receiver, kt_config: Any
) -> None:
    write_model(repo, "a", kt_config("addsub"))
    settings = {"trace_rate": ["1"]}
    with ServerThread(repo, **_otel(receiver, **settings)) as server:
        assert not server.server.tracer.active and not server.server.tracer.propagates
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            http.infer("a", _add_inputs(httpclient), headers={"traceparent": TRACEPARENT})
        finally:
            http.close()
    assert receiver.spans == []


@pytest.mark.parametrize(
    "header",
    [
        "00-" + CLIENT_TRACE + "-" + CLIENT_SPAN + "-01-extra",  # version 00 has 4 fields
        "ff-" + CLIENT_TRACE + "-" + CLIENT_SPAN + "-01",
        "00-" + CLIENT_TRACE.upper() + "-" + CLIENT_SPAN + "-01",
        "00-" + CLIENT_TRACE + "-" + "0" * 16 + "-01",
        "garbage",
        "",
    ],
)
def test_malformed_traceparent_is_ignored(header: str) -> None:
    tracer = Tracer(TraceStore(), None)
    assert tracer.continued(header) is None


def test_traceparent_parts_are_kept() -> None:
    tracer = Tracer(TraceStore(), None)
    trace = tracer.continued(f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-00-later", "k=v")
    assert trace is not None and trace.id == 0
    assert trace.remote == (int(CLIENT_TRACE, 16), int(CLIENT_SPAN, 16), 0, "k=v")


def test_trace_config_opentelemetry_flags() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--trace-config",
            "mode=opentelemetry",
            "--trace-config",
            "opentelemetry,url=collector:4318/v1/traces",
            "--trace-config",
            "opentelemetry,resource=service.name=t",
            "--trace-config",
            "opentelemetry,bsp_max_queue_size=100",
            "--trace-config",
            "level=TIMESTAMPS",
        ]
    )
    options = options_from_args(args)
    assert options.trace_mode == "opentelemetry"
    assert options.trace_opentelemetry == [
        ("url", "collector:4318/v1/traces"),
        ("resource", "service.name=t"),
        ("bsp_max_queue_size", "100"),
    ]
    assert options.trace_settings["trace_level"] == ["TIMESTAMPS"]
    from kernel._otel import OtelConfig

    config = OtelConfig.parse(options.trace_opentelemetry)
    assert config.url == "http://collector:4318/v1/traces"
    assert config.resource == {"service.name": "t"}
    assert config.bsp == {"max_queue_size": 100, "max_export_batch_size": 100}


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("mode=zipkin", "unknown trace mode 'zipkin'"),
        ("opentelemetry,file=/tmp/x", "unknown trace setting 'file'"),
        ("opentelemetry,bsp_schedule_delay=soon", "takes a non-negative integer"),
        ("opentelemetry,resource=novalue", "expected resource=<key>=<value>"),
    ],
)
def test_bad_opentelemetry_flags_are_refused(flag: str, message: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--trace-config", flag])


def test_batch_bigger_than_queue_is_refused() -> None:
    with pytest.raises(KernelError, match="bsp_max_export_batch_size"):
        Tracer(
            TraceStore(),
            None,
            mode="opentelemetry",
            opentelemetry=[("bsp_max_queue_size", "10"), ("bsp_max_export_batch_size", "20")],
        )
    with pytest.raises(KernelError, match="'bsp_schedule_delay' takes a positive integer"):
        Tracer(
            TraceStore(), None, mode="opentelemetry", opentelemetry=[("bsp_schedule_delay", "0")]
        )


def test_a_small_queue_gets_a_batch_that_fits() -> None:
    from kernel._otel import OtelConfig

    config = OtelConfig.parse([("bsp_max_queue_size", "100")])
    assert config.bsp == {"max_queue_size": 100, "max_export_batch_size": 100}
    assert OtelConfig.parse([]).bsp == {"max_export_batch_size": 512}


def test_a_sink_that_cannot_start_turns_tracing_off(
    repo: Path, receiver: _Receiver, kt_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving goes on: the failure is logged and no request is traced."""
    from kernel._otel import OtelSink

    def broken(*args: Any) -> None:
        raise RuntimeError("no exporter")

    monkeypatch.setattr(OtelSink, "__init__", broken)
    write_model(repo, "a", kt_config("addsub"))
    with ServerThread(repo, **_otel(receiver)) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            for _ in range(2):
                http.infer("a", _add_inputs(httpclient))
            assert not server.server.tracer.active
        finally:
            http.close()
    assert receiver.spans == []


def test_without_the_otel_extra_the_mode_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "kernel._otel", None)  # as if the SDK were missing
    with pytest.raises(KernelError, match=r"pip install 'triton-kernel\[otel\]'"):
        Tracer(TraceStore(), None, mode="opentelemetry")
    assert Tracer(TraceStore(), None).otel is False  # Triton mode never imports it


def test_the_span_queue_is_bounded_and_drops_the_excess(
    receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients forcing a trace on every request cannot grow the queue past its bound."""
    import threading as threads

    from kernel._otel import OtelConfig, OtelSink
    from kernel._tracing import RequestTrace

    release = threads.Event()
    taken = threads.Event()

    def stalled(self: Any, trace: Any) -> None:
        taken.set()
        release.wait(30)

    monkeypatch.setattr(OtelSink, "_export", stalled)
    tracer = Tracer(TraceStore(), None, mode="opentelemetry")
    sink = OtelSink(tracer, OtelConfig.parse([("url", receiver.url), ("bsp_max_queue_size", "2")]))
    sink.submit(RequestTrace(1, 0, sink))
    assert taken.wait(30)  # the thread holds the first one
    for index in range(5):
        sink.submit(RequestTrace(index + 2, 0, sink))
    assert sink.dropped == 3
    release.set()
    sink.close()
