"""What a model process asks of the server, answered on the server's event loop.

A model calls the server through its runtime (``_stub.py``): ``rpc`` messages wait for a
``reply`` (cancellation checks, readiness, custom metrics, model load and unload), ``notify``
messages do not (logging, metric updates), and ``bls`` messages run an inference on the server
whose responses go back as ``bls_response`` messages until the final one. :class:`ModelCalls`
answers them for one :class:`~triton_backend_python._process.ModelProcess`, keeps the metric
handles it gave out (released when the process goes) and the tasks it started (cancelled then).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from triton_python_backend_utils._logging import python_log_level

from kernel import InferenceRequest, InferenceResponse, KernelError, RequestFlags, Status
from triton_backend_python._convert import CODE_BY_STATUS
from triton_backend_python._registry import MetricRegistry
from triton_backend_python._wire import SharedMemoryFullError

if TYPE_CHECKING:
    from triton_backend_python._process import ModelProcess

__all__ = ["ModelCalls", "wire_error"]


def wire_error(error: KernelError | None) -> tuple[int, str] | None:
    """An error in the form the wire carries: (Triton error code, message)."""
    return None if error is None else (CODE_BY_STATUS[error.status], error.message)


class ModelCalls:
    """The model's calls to the server, for one model process."""

    def __init__(self, process: ModelProcess) -> None:
        self._process = process
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._task_ids = itertools.count(-1, -1)  # tasks without a call id
        self._metric_handles: dict[int, tuple[str, object]] = {}
        self._metric_ids = itertools.count(1)

    def dispatch(self, message: tuple[Any, ...]) -> None:
        """Handle an ``rpc``, ``notify``, ``bls`` or ``bls_cancel`` message."""
        kind = message[0]
        if kind in ("rpc", "notify"):
            self._on_call(message[1], message[2], message[3])
        elif kind == "bls":
            self._spawn(message[1], self._bls(*message[1:]))
        elif kind == "bls_cancel":
            task = self._tasks.get(message[1])
            if task is not None:
                task.cancel()

    def close(self) -> None:
        """The process is gone: cancel what it started and drop the metrics it held."""
        for task in self._tasks.values():
            task.cancel()
        self._release_metrics()

    def _spawn(self, call_id: int, coroutine: Any) -> None:
        key = call_id or next(self._task_ids)
        task = asyncio.ensure_future(coroutine)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    def _reply(self, call_id: int, value: Any = None, error: str | None = None) -> None:
        if call_id:
            self._process.send(("reply", call_id, value, error))

    def _on_call(self, call_id: int, op: str, args: tuple[Any, ...]) -> None:
        if op in ("load_model", "unload_model"):
            self._spawn(call_id, self._model_control(call_id, op, args))
            return
        if op == "is_model_ready":  # as the ready endpoints: readiness hooks included
            self._spawn(call_id, self._model_ready(call_id, *args))
            return
        try:
            value = self._answer(op, args)
        except Exception as exc:
            self._reply(call_id, error=str(exc) or type(exc).__name__)
        else:
            self._reply(call_id, value)

    def _answer(self, op: str, args: tuple[Any, ...]) -> Any:
        process = self._process
        registry: MetricRegistry = process.model.metrics
        if op == "is_cancelled":
            request = process.inflight.get(args[0])
            return request is None or request.is_cancelled()
        if op == "log":
            process.logger.log(python_log_level(args[0]), "%s", args[1])
            return None
        handles = self._metric_handles
        if op == "metric_family":
            entry = ("family", registry.create_family(*args))
        elif op == "metric_new":
            family, labels, buckets = args
            entry = ("metric", registry.create_metric(handles[family][1], labels, buckets))
        elif op == "metric_update":
            metric, how, value = args
            registry.update(handles[metric][1], how, value)
            return None
        elif op == "metric_value":
            return registry.value(handles[args[0]][1])
        elif op == "metric_release":
            registry.release_metric(handles.pop(args[0])[1])
            return None
        elif op == "metric_release_family":
            registry.release_family(handles.pop(args[0])[1])
            return None
        else:
            raise KernelError(Status.INVALID_ARG, f"unknown request '{op}' from a model")
        number = next(self._metric_ids)
        handles[number] = entry
        return number

    def _release_metrics(self) -> None:
        """Drop the metrics a (dead or finalized) model process still held."""
        registry = self._process.model.metrics
        handles, self._metric_handles = self._metric_handles, {}
        # series first: a family goes away once its last series is gone
        for kind, handle in sorted(handles.values(), key=lambda item: item[0] != "metric"):
            if kind == "metric":
                registry.release_metric(handle)
            else:
                registry.release_family(handle)

    async def _model_ready(self, call_id: int, name: str, version: str) -> None:
        try:
            ready = await self._process.server.model_ready(name, int(version) if version else -1)
        except (KernelError, ValueError) as exc:
            self._reply(call_id, error=str(exc))
        else:
            self._reply(call_id, ready)

    async def _model_control(self, call_id: int, op: str, args: tuple[Any, ...]) -> None:
        server = self._process.server
        try:
            if op == "load_model":
                name, config, files = args
                stripped = {k.removeprefix("file:"): v for k, v in (files or {}).items()}
                await server.load_model(name, config or None, stripped or None)
            else:
                name, dependents = args[0], bool(args[1]) if len(args) > 1 else False
                await server.unload_model(name, unload_dependents=dependents)
        except KernelError as exc:
            self._reply(call_id, error=exc.message)
        else:
            self._reply(call_id)

    async def _bls(
        self,
        call_id: int,
        model_name: str,
        model_version: int,
        inputs: dict[str, Any],
        requested: tuple[str, ...],
        request_id: str,
        correlation_id: int | str,
        flags: int,
        timeout: int,
        parameters: dict[str, Any],
        parent: int | None = None,
    ) -> None:
        process = self._process
        final = False
        stream: AsyncIterator[InferenceResponse] | None = None
        try:
            request = InferenceRequest(
                model_name,
                inputs,
                model_version=model_version,
                id=request_id,
                requested_output_names=requested,
                parameters=parameters,
                correlation_id=correlation_id,
                flags=RequestFlags(flags & 3),
                timeout_us=timeout,
            )
            owner = None if parent is None else process.inflight.get(parent)
            if owner is not None and owner.trace is not None:  # a child of the caller's trace
                request.trace = owner.trace.child()
            stream = process.server.infer(request)
            async for response in stream:
                final = response.final
                message = (
                    "bls_response",
                    call_id,
                    response.outputs if response.error is None else None,
                    wire_error(response.error),
                    response.parameters or None,
                    final,
                )
                try:
                    process.send(message)
                except SharedMemoryFullError as exc:
                    raise KernelError(Status.UNAVAILABLE, str(exc.strerror)) from exc
        except KernelError as exc:
            final = True
            process.send(("bls_response", call_id, None, wire_error(exc), None, True))
        finally:
            if not final and not process.closing:
                cancelled = (CODE_BY_STATUS[Status.CANCELLED], "the BLS request was cancelled")
                process.send(("bls_response", call_id, None, cancelled, None, True))
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # cancelled (bls_cancel): the called request is cancelled now
                with anyio.CancelScope(shield=True):
                    await aclose()
