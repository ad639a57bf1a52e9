"""The server object: owns the repository, the backends, the models and the frontends.

There is no module-level state: everything hangs off one :class:`InferenceServer`, so tests run
several servers in one process. Its protocol-neutral API (``prepare``, ``infer``,
``model_metadata``, ``load_model``, the log and trace settings, ...) is what every frontend
calls; frontends only translate wire formats and never touch :mod:`kernel._models`. An inference
request is routed once: :meth:`InferenceServer.prepare` answers its model name and version with
an :class:`InferenceTarget` (config, validator, decoupled flag, labels), the frontend decodes
against it and submits to it.

Lifecycle (:meth:`InferenceServer.serve`): start the model manager, load the startup models,
bind and start the frontends, serve until :meth:`InferenceServer.stop`; then stop the frontends
accepting and let their in-flight requests finish (up to the exit timeout), unload every model
(last loaded first) and finalize the backends (last initialized first).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import TaskStatus

from kernel import __version__
from kernel._backend import MetricSource
from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest, InferenceResponse
from kernel._inference_target import InferenceTarget
from kernel._latency import parse_metrics_config
from kernel._log_settings import LogSettings
from kernel._manager import ModelIndexEntry, ModelManager
from kernel._models import ModelVersion
from kernel._options import FrontendConfig, ModelControlMode, ServerOptions
from kernel._proto.inference import ModelConfig
from kernel._registry import BackendRegistry
from kernel._repository import ModelRepository, check_model_name
from kernel._response_cache import ResponseCache, ResponseCaching, parse_cache_config
from kernel._scheduling._rate_limiter import RateLimiter
from kernel._shared_memory import SystemSharedMemory
from kernel._statistics import FailureReason, ModelStatistics
from kernel._trace_settings import TraceStore
from kernel._tracing import Tracer
from kernel.tensors import config_type_to_datatype

if TYPE_CHECKING:
    from kernel._frontend_plugins import FrontendPlugin

__all__ = [
    "EXTENSIONS",
    "Frontend",
    "InferenceServer",
    "InferenceTarget",
    "MetricSource",
    "ModelMetadata",
    "TensorMetadata",
]

log = logging.getLogger("kernel.server")


class Frontend(Protocol):
    """A protocol endpoint (gRPC, HTTP, metrics, a plugin's) serving on a socket the server
    bound; made by a :class:`~kernel.frontends.FrontendPlugin`'s ``create``."""

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Start serving on ``sock`` (bound and listening) and return; serving continues in
        tasks the frontend owns. Called on the server's event loop once the startup models
        settled; the frontend talks to the server only through its public API.

        :raises Exception: the frontend could not start: logged with its reason and the
            others serve (the server stops instead with ``exit_on_frontend_error``).
        """
        ...

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish for up to ``timeout`` s, close.
        Called once at shutdown, concurrently with the other frontends' ``stop``."""
        ...


class _PlannedFrontend:
    """A frontend created and its socket bound, not yet started."""

    __slots__ = ("address", "frontend", "sock")

    def __init__(self, frontend: Frontend, sock: socket.socket, address: str) -> None:
        self.frontend = frontend
        self.sock = sock
        self.address = address


EXTENSIONS = (
    "classification",
    "sequence",
    "model_repository",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
)
"""The protocol extensions both frontends serve (Triton's names, in Triton's order), as server
metadata lists them. Not listed: CUDA shared memory (no GPU), ``schedule_policy`` and
``model_repository(unload_dependents)``."""


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """The KServe v2 model metadata."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


def parse_version(version: str | int) -> int:
    """The protocol's version string as an int; ``""`` means the latest (-1).

    :raises KernelError: ``INVALID_ARG`` for a version that is not a number.
    """
    if isinstance(version, int):
        return version
    if version == "":
        return -1
    try:
        number = int(version)
    except ValueError:
        raise KernelError(
            Status.INVALID_ARG,
            f"failed to get model version from specified version string '{version}' (details:"
            " stol), version should be an integral value > 0",
        ) from None
    if number < 0:
        raise KernelError(
            Status.INVALID_ARG,
            f"invalid model version specified '{version}' , version should be an integral"
            " value > 0",
        )
    return number


class InferenceServer:
    """One inference server. Use :meth:`running` in tests, :meth:`serve` as a task otherwise."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self.version = __version__
        self.repository = ModelRepository(
            self.options.model_repositories, config_name=self.options.model_config_name
        )
        self.registry = BackendRegistry(
            self.options.backend_config,
            [] if self.options.backend_directory is None else [self.options.backend_directory],
        )
        self.manager = ModelManager(
            self.repository,
            self.registry,
            server=self,
            auto_complete=self.options.auto_complete_config,
            backend_config=self.options.backend_config,
            drain_timeout=self.options.exit_timeout_secs,
            load_retry_count=self.options.model_load_retry_count,
        )
        cache_bytes = parse_cache_config(self.options.cache_config)
        self.response_cache: ResponseCaching | None = (
            None if cache_bytes is None else ResponseCaching(ResponseCache(cache_bytes))
        )
        """The response cache (``--cache-config local,size=N``), if enabled."""
        self.rate_limiter: RateLimiter | None = (
            RateLimiter(self.options.rate_limit_resources)
            if self.options.rate_limit == "execution_count"
            else None
        )
        """The rate limiter every model's instances share (``--rate-limit execution_count``)."""
        self.shared_memory = SystemSharedMemory()
        self.log_settings = LogSettings(
            self.options.log_verbose,
            initial={
                "log_file": str(self.options.log_file or ""),
                "log_info": self.options.log_info,
                "log_warning": self.options.log_warning,
                "log_error": self.options.log_error,
                "log_format": self.options.log_format,
            },
        )
        """Triton's log settings, read and updated through both endpoints."""
        traces = dict(self.options.trace_settings)
        traces["trace_mode"] = [self.options.trace_mode]
        if self.options.trace_file is not None:
            traces["trace_file"] = [str(self.options.trace_file)]
        otel = self.options.trace_mode == "opentelemetry"
        self.trace_settings = TraceStore(traces, self.options.trace_opentelemetry if otel else None)
        """Triton's trace settings, global and per model, for both endpoints."""
        self.latency_config = parse_metrics_config(self.options.metrics_config)
        """``--metrics-config``: latency summaries and histograms (read by each model version)."""
        self.tracer = Tracer(
            self.trace_settings,
            self.options.trace_file,
            mode=self.options.trace_mode,
            opentelemetry=self.options.trace_opentelemetry,
        )
        """Samples and collects traces; writes Triton's files (``--trace-config triton,file=``)
        or exports OpenTelemetry spans (``--trace-config mode=opentelemetry``)."""
        self.trace_settings.listeners.append(self.tracer.refresh)
        self.metric_families: list[MetricSource] = []
        """Plugins' custom metrics, exported by the metrics endpoint (see add_metric_family)."""
        self.ports: dict[str, int] = {}
        """The bound port of each started frontend (``"http"``, ``"grpc"``, ``"metrics"``,
        plugin frontends by their name)."""
        self.frontend_errors: dict[str, str] = {}
        """Why each frontend that failed to be created, bound or started did, by name."""
        self.live = False
        self.started = False
        self._stop = anyio.Event()
        self._frontends: list[tuple[str, Frontend]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop`. Reports started once the frontends listen and the startup
        models settled (loaded or failed)."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.manager.run)
            self.live = True
            polling = anyio.CancelScope()
            failure: KernelError | None = None
            try:
                # The ports are taken now (a port in use fails before any model loads) but
                # listen only once the startup models settled, as tritonserver's do: until then
                # a connection is refused, which a proxy retries on another replica, where
                # listening early would answer "unknown model" to requests it cannot retry.
                planned = self._bind_frontends()
                try:
                    await self.manager.load_startup(
                        self.options.model_control_mode, self.options.load_models
                    )
                    failure = self._startup_failure()
                    if failure is None:
                        await self._start_frontends(planned)
                finally:
                    for item in planned.values():
                        item.sock.close()  # only those not started (a started one is its own)
                if failure is None:
                    self.started = True
                    if self.options.model_control_mode is ModelControlMode.POLL:
                        tg.start_soon(self._poll_repository, polling)
                    task_status.started()
                    await self._stop.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    self.live = False
                    polling.cancel()
                    await self._stop_frontends()
                    self.manager.close()
            # the manager's task ends after unloading every model
        with anyio.CancelScope(shield=True):
            try:
                await self.registry.finalize()
            finally:  # the collected traces are written whatever happened
                await anyio.to_thread.run_sync(self.tracer.close)
        self.shared_memory.unregister_all()
        log.info("server stopped")
        if failure is not None:
            raise failure

    def _startup_failure(self) -> KernelError | None:
        """tritonserver's ``--exit-on-error``: the error that stops a server whose startup
        models did not all load (it then unloads the others and never listens), or None."""
        if not self.options.exit_on_error or self.manager.all_ready():
            return None
        failed = sorted({row.name for row in self.manager.index() if row.state == "UNAVAILABLE"})
        return KernelError(
            Status.INTERNAL,
            f"failed to load all models (--exit-on-error=true): {', '.join(failed)}",
        )

    def stop(self) -> None:
        """Begin the shutdown; :meth:`serve` returns once it completed."""
        self._stop.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[InferenceServer]:
        """Serve for the duration of an ``async with`` block (one task: fine in a test body)."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.serve)
            try:
                yield self
            finally:
                self.stop()

    async def _poll_repository(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(self.options.repository_poll_secs)
                try:
                    await self.manager.poll()
                except KernelError as exc:
                    log.error("repository poll failed: %s", exc.message)

    def _wanted_frontends(self) -> dict[str, FrontendConfig]:
        """Every frontend to serve: the built-in ones with a port, then the plugins."""
        options = self.options
        wanted = {
            name: FrontendConfig(port=port)
            for name, port in (
                ("http", options.http_port),
                ("grpc", options.grpc_port),
                ("metrics", options.metrics_port),
            )
            if port is not None
        }
        wanted.update(options.frontends)
        return wanted

    def _frontend_failed(self, name: str, reason: str) -> None:
        """Record (and log) why frontend ``name`` cannot serve.

        :raises KernelError: ``UNAVAILABLE`` with ``exit_on_frontend_error``.
        """
        self.frontend_errors[name] = reason
        if self.options.exit_on_frontend_error:
            raise KernelError(Status.UNAVAILABLE, f"the {name} frontend failed: {reason}")
        log.error("the %s frontend is not served: %s", name, reason)

    def _bind_frontends(self) -> dict[str, _PlannedFrontend]:
        """Create each wanted frontend and bind its socket (not yet listening: connections are
        refused until it starts). A frontend that fails is left out (see _frontend_failed).

        :raises KernelError: ``UNAVAILABLE`` with ``exit_on_frontend_error`` when one fails,
            and when every wanted frontend failed (none stays bound).
        """
        from kernel._frontend_plugins import load_frontend_plugins

        wanted = self._wanted_frontends()
        needed = {name for name, config in wanted.items() if config.plugin is None}
        plugins, failures = load_frontend_plugins(needed) if needed else ({}, {})
        planned: dict[str, _PlannedFrontend] = {}
        try:
            for name, config in wanted.items():
                plugin = config.plugin or plugins.get(name)
                if plugin is None:
                    reason = failures.get(name, "no such frontend is installed")
                    self._frontend_failed(name, reason)
                    continue
                try:
                    frontend = plugin.create(_plugin_args(plugin, config.args))
                except Exception as exc:
                    log.debug("creating the %s frontend failed", name, exc_info=True)
                    self._frontend_failed(name, _reason(exc))
                    continue
                address = self.options.address(name)
                reuse = bool(getattr(self.options, f"reuse_{name}_port", False))
                try:
                    sock = _bind(address, config.port, reuse_port=reuse)
                except KernelError as exc:
                    self._frontend_failed(name, exc.message)
                    continue
                planned[name] = _PlannedFrontend(frontend, sock, address)
            if wanted and not planned:
                raise KernelError(Status.UNAVAILABLE, "no frontend could be served")
        except BaseException:
            for item in planned.values():
                item.sock.close()
            raise
        return planned

    async def _start_frontends(self, planned: dict[str, _PlannedFrontend]) -> None:
        """Start each endpoint on its socket; a started one is removed from ``planned``.

        :raises KernelError: ``UNAVAILABLE`` with ``exit_on_frontend_error`` when one fails to
            start, and when none started.
        """
        for name in list(planned):
            item = planned[name]
            sock = item.sock
            bound = sock.getsockname()[1]
            sock.listen(1024)
            try:
                await item.frontend.start(self, sock)
            except Exception as exc:
                log.debug("starting the %s frontend failed", name, exc_info=True)
                self._frontend_failed(name, _reason(exc))
                continue
            del planned[name]
            self.ports[name] = bound
            self._frontends.append((name, item.frontend))
            log.info("started %s endpoint at %s:%d", name, item.address, bound)
        if planned and not self._frontends:
            raise KernelError(Status.UNAVAILABLE, "no frontend could be started")

    async def _stop_frontends(self) -> None:
        # All at once: every endpoint stops accepting now and they drain in parallel within one
        # exit timeout (one after the other, the last would accept work while the first drains).
        frontends, self._frontends = self._frontends, []
        async with anyio.create_task_group() as tg:
            for name, frontend in reversed(frontends):
                tg.start_soon(self._stop_frontend, name, frontend)

    async def _stop_frontend(self, name: str, frontend: Frontend) -> None:
        try:
            await frontend.stop(self.options.exit_timeout_secs)
        except Exception:
            log.exception("the %s endpoint failed to stop cleanly", name)

    # -- health and metadata ---------------------------------------------------------------

    def is_ready(self) -> bool:
        """Server readiness: live, started, and with strict readiness every model ready."""
        if not (self.live and self.started):
            return False
        return not self.options.strict_readiness or self.manager.all_ready()

    def add_metric_family(self, source: MetricSource) -> None:
        """Export ``source`` on ``/metrics`` from now on (once, however often it is added)."""
        if source not in self.metric_families:
            self.metric_families.append(source)

    def is_model_ready(self, name: str, version: str | int = -1) -> bool:
        """Whether ``name``/``version`` serves.

        :raises KernelError: ``INVALID_ARG`` for a name no model can have, or a bad version.
        """
        if self.manager.is_ready(name, parse_version(version)):
            return True
        check_model_name(name)
        return False

    async def model_ready(self, name: str, version: str | int = -1) -> bool:
        """What the model ready endpoints answer: :meth:`is_model_ready`, and the version's
        instances that implement :meth:`~kernel._backend.ModelInstance.ready` agree.

        :raises KernelError: as :meth:`is_model_ready`.
        """
        if not self.is_model_ready(name, version):
            return False
        try:
            chosen = self.manager.route(name, parse_version(version))
        except KernelError:
            return False
        return await chosen.instances_ready()

    def prepare(self, name: str, version: str | int = -1) -> InferenceTarget:
        """Where a request for ``name``/``version`` goes: the one routing of a request.

        The frontends decode the request against the target (config, validator, decoupled
        flag, labels) and submit it with :meth:`infer_once` / :meth:`infer` to the same
        target, so a request is routed once even when a reload lands in between.

        :raises KernelError: ``NOT_FOUND`` for an unknown model or version, ``INVALID_ARG`` for
            a bad name or version string, ``UNAVAILABLE`` for a version that is not ready.
        """
        return self.manager.prepare(name, parse_version(version))

    def route(self, name: str, version: str | int = -1) -> ModelVersion:
        """The model version a request for ``name``/``version`` goes to (see ModelManager);
        for the kernel and its tests -- frontends use :meth:`prepare`."""
        return self.manager.route(name, parse_version(version))

    def model_config(self, name: str, version: str | int = -1) -> ModelConfig:
        return self.route(name, version).config

    def model_metadata(self, name: str, version: str | int = -1) -> ModelMetadata:
        chosen = self.route(name, version)
        config = chosen.config
        batch = (-1,) if config.max_batch_size > 0 else ()
        versions = tuple(str(v.version) for v in self.manager.loaded_versions() if v.name == name)
        return ModelMetadata(
            name=name,
            versions=versions if parse_version(version) < 0 else (str(chosen.version),),
            platform=config.platform or config.backend,
            inputs=tuple(
                TensorMetadata(
                    t.name, config_type_to_datatype(t.data_type.name or ""), batch + tuple(t.dims)
                )
                for t in config.input
            ),
            outputs=tuple(
                TensorMetadata(
                    t.name, config_type_to_datatype(t.data_type.name or ""), batch + tuple(t.dims)
                )
                for t in config.output
            ),
        )

    def model_statistics(self, name: str = "", version: str | int = -1) -> list[ModelStatistics]:
        """Statistics of one model version, of all versions of a model, or of every model."""
        if not name:
            return [v.stats for v in self.manager.loaded_versions()]
        number = parse_version(version)
        versions = [v for v in self.manager.loaded_versions() if v.name == name]
        if not versions:
            check_model_name(name)
            raise KernelError(Status.INVALID_ARG, f"requested model '{name}' is not available")
        if number >= 0:
            versions = [v for v in versions if v.version == number]
            if not versions:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"requested model version is not available for model '{name}'",
                )
        return [v.stats for v in versions]

    def repository_index(self, *, ready_only: bool = False) -> list[ModelIndexEntry]:
        return self.manager.index(ready_only=ready_only)

    def _check_model_control(self) -> None:
        if self.options.model_control_mode is not ModelControlMode.EXPLICIT:
            raise KernelError(
                Status.FAILED_PRECONDITION,
                "explicit model load / unload is not allowed if polling is enabled",
            )

    async def load_model(
        self, name: str, config: str | None = None, files: Mapping[str, bytes] | None = None
    ) -> None:
        """Load or reload a model (the repository API; explicit control mode only).

        :raises KernelError: ``FAILED_PRECONDITION`` outside explicit mode, else why the load
            failed.
        """
        self._check_model_control()
        await self.manager.load(name, config, files)

    async def unload_model(self, name: str, *, unload_dependents: bool = False) -> None:
        """Unload a model (the repository API; explicit control mode only); with
        ``unload_dependents``, an ensemble's composing models too."""
        self._check_model_control()
        await self.manager.unload(name, unload_dependents=unload_dependents)

    # -- inference ------------------------------------------------------------------------------

    def _admit(self, request: InferenceRequest, target: InferenceTarget | None) -> ModelVersion:
        if target is None:
            version = self.manager.route(request.model_name, request.model_version)
        else:
            version = target.model
        request.model_version = version.version
        try:
            request.batch_size = version.validator.validate(request)
            request.enqueued_ns = time.monotonic_ns()
            cache = self.response_cache
            if cache is None or not cache.answer(version, request):
                version.scheduler.enqueue(request)
        except KernelError as exc:
            reason = (
                FailureReason.REJECTED if exc.status is Status.UNAVAILABLE else FailureReason.OTHER
            )
            version.stats.record_request(time.monotonic_ns() - request.arrival_ns, failed=reason)
            raise
        if self.tracer.active:
            self._trace(version, request)
        version.admissions.admit(request)
        return version

    def _trace(self, version: ModelVersion, request: InferenceRequest) -> None:
        """Start the trace of an admitted request, if it is sampled (or an ensemble step)."""
        trace = self.tracer.begin(request.trace, version.name, version.version, request.id)
        request.trace = trace
        if trace is not None:
            version.traced += 1
            trace.stamp("REQUEST_START", request.arrival_ns)
            trace.stamp("QUEUE_START", request.enqueued_ns)
            trace.tensor("TENSOR_QUEUE_INPUT", request.inputs)

    @staticmethod
    def _end_trace(version: ModelVersion, request: InferenceRequest) -> None:
        """A traced request ended without a final response (its client went away)."""
        if request.trace is not None:
            version.traced -= 1
            request.trace.finish()
            request.trace = None

    def _finish(
        self, version: ModelVersion, request: InferenceRequest, response: InferenceResponse
    ) -> None:
        wanted = request.requested_output_names
        if wanted:
            outputs = response.outputs
            for name in outputs:
                if name not in wanted:  # only then a new dict (clients often ask for all)
                    response.outputs = {k: v for k, v in outputs.items() if k in wanted}
                    break
        if self.response_cache is not None:
            self.response_cache.remember(version, request, response)
        trace = request.trace
        if trace is not None:
            trace.tensor("TENSOR_BACKEND_OUTPUT", response.outputs)
            trace.stamp("INFER_RESPONSE_COMPLETE")
            if response.final:
                version.traced -= 1
                trace.finish()
                request.trace = None
        if response.final:
            version.admissions.settle(request)
            failed = None
            if response.error is not None:
                failed = _FAILURE_REASONS.get(response.error.status, FailureReason.BACKEND)
            version.stats.record_request(time.monotonic_ns() - request.arrival_ns, failed=failed)

    async def infer_once(
        self, request: InferenceRequest, target: InferenceTarget | None = None
    ) -> InferenceResponse:
        """Run a non-decoupled request; returns its one response (``error`` set on failure).

        ``target`` is where :meth:`prepare` routed the request (routed here when not given).

        :raises KernelError: when the request is refused before it reaches the model (unknown
            model, invalid inputs, queue full).
        """
        version = self._admit(request, target)
        try:
            response = await request.final_response()
            self._finish(version, request, response)
        except BaseException:  # the client went away (or finishing failed): settled here
            request.cancel()
            version.admissions.settle(request)
            self._end_trace(version, request)
            raise
        return response

    async def infer(
        self, request: InferenceRequest, target: InferenceTarget | None = None
    ) -> AsyncGenerator[InferenceResponse, None]:
        """Run any request; yields every response, the last with ``final`` set.

        Closing the generator early (``aclose``) cancels the request.

        ``target`` is where :meth:`prepare` routed the request (routed here when not given).

        :raises KernelError: when the request is refused before it reaches the model.
        """
        version = self._admit(request, target)
        final = False
        latency = version.stats.latency
        decoupled = version.decoupled
        index = 0
        previous = 0
        try:
            async for response in request.responses():
                if decoupled:
                    previous = _response_stats(version, request, response, index, previous)
                    index += 1
                if latency is not None:
                    if decoupled and (response.outputs or response.final):
                        latency.first(time.monotonic_ns() - request.arrival_ns)
                    latency = None  # the first response only
                self._finish(version, request, response)
                final = response.final
                yield response
        finally:
            if not final and decoupled:
                version.stats.record_response(index, 0, 0, kind="cancel")
            if not final:
                request.cancel()
                version.admissions.settle(request)
                self._end_trace(version, request)


def _response_stats(
    version: ModelVersion,
    request: InferenceRequest,
    response: InferenceResponse,
    index: int,
    previous: int,
) -> int:
    """Count a decoupled model's ``index``-th response; returns when it was sent."""
    now = time.monotonic_ns()
    sent = response.sent_ns or now
    begin = previous or request.started_ns or request.enqueued_ns
    infer_ns = max(0, sent - begin)
    output_ns = max(0, now - sent)
    if response.error is not None:
        kind = "fail"
    elif response.final and not response.outputs:
        kind = "empty"
    else:
        kind = "success"
    version.stats.record_response(index, infer_ns, output_ns, kind=kind)
    return sent


# How a failed answer counts in ``nv_inference_request_failure``: the schedulers refuse with
# UNAVAILABLE (queue full, queue timeout, unloading), cancellation is CANCELLED, the rest is the
# backend's.
_FAILURE_REASONS = {
    Status.CANCELLED: FailureReason.CANCELED,
    Status.UNAVAILABLE: FailureReason.REJECTED,
}


def _reason(exc: Exception) -> str:
    """Why a frontend failed, for the log and ``frontend_errors``."""
    if isinstance(exc, KernelError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _plugin_args(
    plugin: FrontendPlugin, args: Sequence[str] | argparse.Namespace
) -> argparse.Namespace:
    """A plugin frontend's parsed flags: as given, or parsed from command-line words.

    :raises KernelError: ``INVALID_ARG`` for words its flags do not accept.
    """
    if isinstance(args, argparse.Namespace):
        return args
    from kernel._frontend_plugins import plugin_arguments

    parser = argparse.ArgumentParser(prog=f"{plugin.name} frontend", exit_on_error=False)
    plugin_arguments(parser, plugin)
    try:
        parsed, extra = parser.parse_known_args(list(args))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise KernelError(Status.INVALID_ARG, f"bad {plugin.name} frontend flags: {exc}") from None
    if extra:
        raise KernelError(
            Status.INVALID_ARG, f"unknown {plugin.name} frontend flag(s): {' '.join(extra)}"
        )
    return parsed


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind a TCP socket (port 0 picks a free one); it listens once its endpoint starts.

    ``reuse_port`` sets ``SO_REUSEPORT`` (tritonserver's ``--reuse-http-port`` /
    ``--reuse-grpc-port``): servers that all set it share the port, the kernel spreading
    connections among them.

    :raises KernelError: ``UNAVAILABLE`` when the address is taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted connections; without it
    # every small response waits ~40 ms for the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise KernelError(Status.UNAVAILABLE, f"cannot listen on {host}:{port}: {exc}") from exc
    sock.setblocking(False)
    return sock
