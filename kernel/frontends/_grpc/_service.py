"""``inference.GRPCInferenceService``: every rpc, translated to the server's API.

The servicer implements the generated betterproto2 base class. Its ``__mapping__`` (what grpclib
serves) swaps in the fast inference rpcs of :mod:`._infer` and wraps every handler once: work is
counted for a graceful stop, and a :class:`KernelError` becomes the gRPC status of the one
mapping table, :func:`kernel._errors.grpc_status`, with its message unchanged (any other
exception is the server's fault: ``INTERNAL``, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import betterproto2
from grpclib.const import Cardinality, Handler
from grpclib.const import Status as GrpcStatus
from grpclib.exceptions import GRPCError

from kernel._errors import KernelError, Status, grpc_status
from kernel._log_settings import LogValue
from kernel._proto.inference import (
    CudaSharedMemoryRegisterRequest,
    CudaSharedMemoryRegisterResponse,
    CudaSharedMemoryStatusRequest,
    CudaSharedMemoryStatusResponse,
    CudaSharedMemoryUnregisterRequest,
    CudaSharedMemoryUnregisterResponse,
    GrpcInferenceServiceBase,
    InferBatchStatistics,
    InferResponseStatistics,
    InferStatistics,
    LogSettingsRequest,
    LogSettingsResponse,
    LogSettingsResponseSettingValue,
    MemoryUsage,
    ModelConfigRequest,
    ModelConfigResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelMetadataResponseTensorMetadata,
    ModelReadyRequest,
    ModelReadyResponse,
    ModelStatistics,
    ModelStatisticsRequest,
    ModelStatisticsResponse,
    RepositoryIndexRequest,
    RepositoryIndexResponse,
    RepositoryIndexResponseModelIndex,
    RepositoryModelLoadRequest,
    RepositoryModelLoadResponse,
    RepositoryModelUnloadRequest,
    RepositoryModelUnloadResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
    StatisticDuration,
    SystemSharedMemoryRegisterRequest,
    SystemSharedMemoryRegisterResponse,
    SystemSharedMemoryStatusRequest,
    SystemSharedMemoryStatusResponse,
    SystemSharedMemoryStatusResponseRegionStatus,
    SystemSharedMemoryUnregisterRequest,
    SystemSharedMemoryUnregisterResponse,
    TraceSettingRequest,
    TraceSettingResponse,
    TraceSettingResponseSettingValue,
)
from kernel._server import EXTENSIONS, InferenceServer
from kernel._statistics import Duration
from kernel._statistics import ModelStatistics as KernelModelStatistics
from kernel.frontends._access import SHM_REFUSED, Restrictions
from kernel.frontends._grpc._in_flight import InFlight
from kernel.frontends._grpc._infer import InferenceRpcs
from kernel.frontends._grpc._messages import (
    InferRequestReader,
    InferResponsePb,
    StreamInferResponsePb,
    StrictRequest,
)
from kernel.frontends._grpc._tensors import TensorCodec

__all__ = ["InferenceServicer", "grpc_error"]


log = logging.getLogger("kernel.frontends.grpc")

_SERVICE = "/inference.GRPCInferenceService/"
_INFER = _SERVICE + "ModelInfer"
_STREAM_INFER = _SERVICE + "ModelStreamInfer"
# Answered even while stopping (probes must see the server go unready, not fail); a stream
# counts its requests itself, so an idle stream does not hold up a stop.
_UNCOUNTED = {
    _SERVICE + "ServerLive",
    _SERVICE + "ServerReady",
    _SERVICE + "ModelReady",
    _STREAM_INFER,
}
_LOAD_FILE_PREFIX = "file:"
_SHARED_MEMORY = _SERVICE + "SystemSharedMemory", _SERVICE + "CudaSharedMemory"
# tritonserver's restricted protocol groups (--grpc-restricted-protocol) of every rpc
_GROUPS = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}


def rpc_group(path: str) -> str | None:
    """The restricted protocol group of an rpc path (``grpc.health.v1`` is ``health``)."""
    if path.startswith("/grpc.health.v1.Health/"):
        return "health"
    name = path.rpartition("/")[2]
    if "SharedMemory" in name:
        return "shared-memory"
    return _GROUPS.get(name)


_Rpc = Callable[[Any], Awaitable[None]]


def grpc_error(error: KernelError) -> GRPCError:
    """The gRPC error a client receives for ``error`` (status through the one table)."""
    return GRPCError(GrpcStatus(grpc_status(error.status)), error.message)


async def _refuse_shared_memory(stream: Any) -> None:
    raise KernelError(Status.UNSUPPORTED, SHM_REFUSED)


def _restricted(rpc: _Rpc, restrictions: Restrictions, group: str) -> _Rpc:
    """``rpc`` answering UNAVAILABLE, as Triton, without the group's header."""

    async def checked(stream: Any) -> None:
        metadata: dict[bytes, bytes] = getattr(stream, "metadata", {})
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in metadata.items()}
        refusal = restrictions.refusal(group, headers)
        if refusal is not None:
            raise GRPCError(GrpcStatus.UNAVAILABLE, refusal)
        await rpc(stream)

    return checked


def _duration(duration: Duration) -> StatisticDuration:
    return StatisticDuration(count=duration.count, ns=duration.ns)


def _statistics(stats: KernelModelStatistics) -> ModelStatistics:
    return ModelStatistics(
        name=stats.name,
        version=str(stats.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
            cache_hit=_duration(stats.cache_hit),
            cache_miss=_duration(stats.cache_miss),
        ),
        batch_stats=[
            InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(batch.compute_input),
                compute_infer=_duration(batch.compute_infer),
                compute_output=_duration(batch.compute_output),
            )
            for size, batch in sorted(stats.batch_stats.items())
        ],
        response_stats={
            str(index): InferResponseStatistics(
                compute_infer=_duration(r.compute_infer),
                compute_output=_duration(r.compute_output),
                success=_duration(r.success),
                fail=_duration(r.fail),
                empty_response=_duration(r.empty_response),
                cancel=_duration(r.cancel),
            )
            for index, r in sorted(stats.response_stats.items())
        },
        memory_usage=[
            MemoryUsage(type=m.type, id=m.id, byte_size=m.byte_size) for m in stats.memory_usage
        ],
    )


class InferenceServicer(GrpcInferenceServiceBase):  # type: ignore[misc]  # generated, untyped
    """Every rpc of ``inference.GRPCInferenceService`` for one server."""

    def __init__(self, server: InferenceServer, in_flight: InFlight) -> None:
        self._server = server
        self._in_flight = in_flight
        self._rpcs = InferenceRpcs(server, TensorCodec(server), in_flight)
        self._restrictions = Restrictions(server.options.grpc_restricted_protocol, grpc=True)

    # -- what grpclib serves ------------------------------------------------------------------

    def __mapping__(self) -> dict[str, Handler]:
        mapping: dict[str, Handler] = dict(super().__mapping__())
        mapping[_INFER] = Handler(
            self._rpcs.model_infer, Cardinality.UNARY_UNARY, InferRequestReader, InferResponsePb
        )
        mapping[_STREAM_INFER] = Handler(
            self._rpcs.model_stream_infer,
            Cardinality.STREAM_STREAM,
            InferRequestReader,
            StreamInferResponsePb,
        )
        served: dict[str, Handler] = {}
        for path, handler in mapping.items():
            request_type = handler.request_type
            if path not in (_INFER, _STREAM_INFER):
                request_type = StrictRequest(request_type)
            served[path] = handler._replace(
                func=self._guard(path, handler.func, counted=path not in _UNCOUNTED),
                request_type=request_type,
            )
        return served

    def restrict(self, mapping: dict[str, Handler]) -> dict[str, Handler]:
        """Another service's handlers (``grpc.health.v1``) under the restricted groups."""
        if not self._restrictions:
            return mapping
        served = {}
        for path, handler in mapping.items():
            group = rpc_group(path)
            if group is not None:
                handler = handler._replace(
                    func=_restricted(handler.func, self._restrictions, group)
                )
            served[path] = handler
        return served

    def _guard(self, path: str, rpc: _Rpc, *, counted: bool) -> _Rpc:
        in_flight = self._in_flight
        if not self._server.options.allow_client_shm and path.startswith(_SHARED_MEMORY):
            rpc = _refuse_shared_memory
        restrictions = self._restrictions
        group = rpc_group(path) if restrictions else None
        if group is not None:
            rpc = _restricted(rpc, restrictions, group)

        async def guarded(stream: Any) -> None:
            try:
                if counted:
                    # the transport refuses streams opened after the stop's GOAWAY: this
                    # one came before it and is served
                    in_flight.enter(refuse=False)
                    try:
                        await rpc(stream)
                    finally:
                        in_flight.leave()
                else:
                    await rpc(stream)
            except KernelError as exc:
                raise grpc_error(exc) from None
            except GRPCError:
                raise
            except Exception as exc:  # our fault: INTERNAL, as over HTTP
                log.exception("gRPC %s failed", path)
                raise grpc_error(KernelError.wrap(exc)) from None

        return guarded

    # -- health and metadata ------------------------------------------------------------------

    async def server_live(self, message: ServerLiveRequest) -> ServerLiveResponse:
        return ServerLiveResponse(live=self._server.live)

    async def server_ready(self, message: ServerReadyRequest) -> ServerReadyResponse:
        return ServerReadyResponse(ready=self._server.is_ready())

    async def model_ready(self, message: ModelReadyRequest) -> ModelReadyResponse:
        ready = await self._server.model_ready(message.name, message.version)
        return ModelReadyResponse(ready=ready)

    async def server_metadata(self, message: ServerMetadataRequest) -> ServerMetadataResponse:
        return ServerMetadataResponse(
            name=self._server.options.server_name,
            version=self._server.version,
            extensions=list(EXTENSIONS),
        )

    async def model_metadata(self, message: ModelMetadataRequest) -> ModelMetadataResponse:
        metadata = self._server.model_metadata(message.name, message.version)
        return ModelMetadataResponse(
            name=metadata.name,
            versions=list(metadata.versions),
            platform=metadata.platform,
            inputs=[
                ModelMetadataResponseTensorMetadata(
                    name=t.name, datatype=t.datatype, shape=list(t.shape)
                )
                for t in metadata.inputs
            ],
            outputs=[
                ModelMetadataResponseTensorMetadata(
                    name=t.name, datatype=t.datatype, shape=list(t.shape)
                )
                for t in metadata.outputs
            ],
        )

    async def model_config(self, message: ModelConfigRequest) -> ModelConfigResponse:
        return ModelConfigResponse(config=self._server.model_config(message.name, message.version))

    async def model_statistics(self, message: ModelStatisticsRequest) -> ModelStatisticsResponse:
        stats = self._server.model_statistics(message.name, message.version)
        return ModelStatisticsResponse(model_stats=[_statistics(s) for s in stats])

    # -- model repository ---------------------------------------------------------------------

    async def repository_index(self, message: RepositoryIndexRequest) -> RepositoryIndexResponse:
        return RepositoryIndexResponse(
            models=[
                RepositoryIndexResponseModelIndex(
                    name=row.name, version=row.version, state=row.state, reason=row.reason
                )
                for row in self._server.repository_index(ready_only=message.ready)
            ]
        )

    async def repository_model_load(
        self, message: RepositoryModelLoadRequest
    ) -> RepositoryModelLoadResponse:
        config: str | None = None
        files: dict[str, bytes] = {}
        for key, param in message.parameters.items():
            kind = ""  # a map entry sent without its value: of no kind
            if param is not None:
                kind, _ = betterproto2.which_one_of(param, "parameter_choice")
            if key == "config":
                if kind != "string_param":
                    raise _load_param_type(key, "string_param")
                config = param.string_param
            elif key.startswith(_LOAD_FILE_PREFIX):
                if kind != "bytes_param":
                    raise _load_param_type(key, "bytes_param")
                files[key[len(_LOAD_FILE_PREFIX) :]] = param.bytes_param
            else:
                raise KernelError(Status.INVALID_ARG, f"unrecognized load parameter '{key}'.")
        await self._server.load_model(message.model_name, config, files or None)
        return RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, message: RepositoryModelUnloadRequest
    ) -> RepositoryModelUnloadResponse:
        dependents = False
        for key, param in message.parameters.items():
            if key != "unload_dependents":
                continue
            kind = "" if param is None else betterproto2.which_one_of(param, "parameter_choice")[0]
            if kind != "bool_param":
                raise KernelError(
                    Status.INVALID_ARG,
                    "invalid value type for 'unload_dependents' parameter, expected bool_param",
                )
            dependents = param.bool_param
        await self._server.unload_model(message.model_name, unload_dependents=dependents)
        return RepositoryModelUnloadResponse()

    # -- shared memory ------------------------------------------------------------------------

    async def system_shared_memory_status(
        self, message: SystemSharedMemoryStatusRequest
    ) -> SystemSharedMemoryStatusResponse:
        return SystemSharedMemoryStatusResponse(
            regions={
                r.name: SystemSharedMemoryStatusResponseRegionStatus(
                    name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size
                )
                for r in self._server.shared_memory.status(message.name)
            }
        )

    async def system_shared_memory_register(
        self, message: SystemSharedMemoryRegisterRequest
    ) -> SystemSharedMemoryRegisterResponse:
        self._server.shared_memory.register(
            message.name, message.key, message.offset, message.byte_size
        )
        return SystemSharedMemoryRegisterResponse()

    async def system_shared_memory_unregister(
        self, message: SystemSharedMemoryUnregisterRequest
    ) -> SystemSharedMemoryUnregisterResponse:
        if message.name:
            self._server.shared_memory.unregister(message.name)
        else:
            self._server.shared_memory.unregister_all()
        return SystemSharedMemoryUnregisterResponse()

    async def cuda_shared_memory_status(
        self, message: CudaSharedMemoryStatusRequest
    ) -> CudaSharedMemoryStatusResponse:
        if message.name:  # nothing can be registered without a GPU
            raise KernelError(
                Status.NOT_FOUND, f"Unable to find cuda shared memory region: '{message.name}'"
            )
        return CudaSharedMemoryStatusResponse()

    async def cuda_shared_memory_register(
        self, message: CudaSharedMemoryRegisterRequest
    ) -> CudaSharedMemoryRegisterResponse:
        raise KernelError(
            Status.INVALID_ARG,
            f"failed to register CUDA shared memory region '{message.name}': CUDA shared memory"
            " is not supported: no GPU",
        )

    async def cuda_shared_memory_unregister(
        self, message: CudaSharedMemoryUnregisterRequest
    ) -> CudaSharedMemoryUnregisterResponse:
        return CudaSharedMemoryUnregisterResponse()

    # -- trace and log settings ---------------------------------------------------------------

    async def trace_setting(self, message: TraceSettingRequest) -> TraceSettingResponse:
        model = message.model_name
        server = self._server
        if model and not server.is_model_ready(model):
            raise KernelError(Status.INVALID_ARG, f"Request for unknown model : {model}")
        store = server.trace_settings
        if message.settings:
            # a map entry sent without its value is the empty message: clear the setting
            settings = store.update(
                model,
                {k: list(v.value) if v is not None else [] for k, v in message.settings.items()},
            )
        else:
            settings = store.get(model)
        return TraceSettingResponse(
            settings={k: TraceSettingResponseSettingValue(value=v) for k, v in settings.items()}
        )

    async def log_settings(self, message: LogSettingsRequest) -> LogSettingsResponse:
        updates: dict[str, object] = {}
        for key, setting in message.settings.items():
            value = None
            if setting is not None:  # a map entry sent without its value: of no kind
                _, value = betterproto2.which_one_of(setting, "parameter_choice")
            updates[key] = _NO_VALUE if value is None else value
        values = self._server.log_settings.update(updates, _wrong_param_kind)
        return LogSettingsResponse(settings={k: _log_value(v) for k, v in values.items()})


_NO_VALUE = object()
"""A log setting sent without a value: of no kind, so refused like a value of a wrong one."""


def _wrong_param_kind(key: str, kind: str) -> KernelError:
    """A log setting of the wrong ``parameter_choice``, in Triton's words."""
    word = "int32" if kind == "unsigned-integer" else kind
    return KernelError(Status.INVALID_ARG, f"expect {word} for '{key}'")


def _load_param_type(key: str, expected: str) -> KernelError:
    return KernelError(
        Status.INVALID_ARG,
        f"invalid value type for load parameter '{key}', expected {expected}.",
    )


def _log_value(value: LogValue) -> LogSettingsResponseSettingValue:
    if isinstance(value, bool):
        return LogSettingsResponseSettingValue(bool_param=value)
    if isinstance(value, int):
        return LogSettingsResponseSettingValue(uint32_param=value)
    return LogSettingsResponseSettingValue(string_param=value)
