"""The default execution mode: a model instance runs in the server process.

Each instance has its own copy of the model module; a plain ``def execute`` runs in a worker
thread (one batch at a time per instance), an ``async def execute`` on the server's event loop.
BLS calls reach other models through the kernel directly: a call from a worker thread hops to
the loop captured at ``initialize``; ``async_exec`` awaits on the loop.

The per-request path is a slot object wrapping the kernel's request (no copy of inputs, JSON of
parameters only when the model asks) and one ``respond`` per response.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import anyio
import triton_python_backend_utils as pb_utils
from triton_python_backend_utils._inference import SingleResponse
from triton_python_backend_utils._logging import python_log_level
from triton_python_backend_utils._runtime import (
    BLS_OUTSIDE_EXECUTE,
    MetricsBackend,
    ResponseChannel,
    forget_fallback_runtime,
    installed_runtime,
    pop_runtime,
    push_runtime,
    set_fallback_runtime,
)

from kernel import (
    InferenceRequest,
    InferenceResponse,
    InstanceContext,
    KernelError,
    ModelInstance,
    RequestFlags,
    ServerHandle,
    Status,
)
from triton_backend_python._convert import (
    kernel_error,
    kernel_response,
    model_response,
    refused,
    shielded,
)
from triton_backend_python._registry import MetricRegistry
from triton_backend_python._runner import ExecuteError, ModelRunner

if TYPE_CHECKING:
    from triton_backend_python._backend import PythonModel

__all__ = ["InProcessInstance", "InProcessRuntime"]

_BLS_CANCELLED = "the BLS request was cancelled"
_BACKGROUND_GRACE_SECONDS = 5.0
"""How long finalize waits for decoupled coroutines still running in the background."""


async def _close(stream: AsyncIterator[InferenceResponse]) -> None:
    """Close a response stream now (cancelling its request if unfinished), not at GC time."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class _ReceivedRequest(pb_utils.InferenceRequest):
    """A kernel request as ``execute`` sees it: reads through to the kernel's object."""

    __slots__ = ()

    @property
    def _kernel(self) -> InferenceRequest:
        return cast(InferenceRequest, self._source)

    def request_id(self) -> str:
        return self._kernel.id

    def correlation_id(self) -> int | str:
        return self._kernel.correlation_id

    def flags(self) -> int:
        return int(self._kernel.flags)

    def timeout(self) -> int:
        return self._kernel.timeout_us

    def parameters(self) -> str:
        return json.dumps(self._kernel.parameters)

    def _parameter_dict(self) -> dict[str, Any]:
        return self._kernel.parameters


class _Channel:
    """Responses of one received request, into the kernel's request."""

    __slots__ = ("_one", "_request", "_sender")

    def __init__(self, request: InferenceRequest, decoupled: bool) -> None:
        self._request = request
        # Taken now, while execute runs: the kernel then keeps the request open for the
        # responses a decoupled model sends after execute returned.
        self._sender = request.response_sender() if decoupled else None
        self._one = None if decoupled else SingleResponse()

    def send(self, response: pb_utils.InferenceResponse | None, final: bool) -> None:
        try:
            if self._sender is not None:
                self._sender.send(
                    None if response is None else kernel_response(response), final=final
                )
                return
            assert self._one is not None
            response = self._one.take(response, final)  # Triton's one-response rule
            if response is None or not final:
                return
            out = kernel_response(response)
            self._request.respond(out.outputs, error=out.error, parameters=out.parameters)
        except KernelError as exc:
            raise pb_utils.TritonModelException(
                "Unable to send response. Response sender has been closed."
            ) from exc

    def is_cancelled(self) -> bool:
        return self._request.is_cancelled()

    def abandon(self) -> None:
        if self._sender is None:
            return  # not decoupled: execute's return (or the kernel) answers the request
        self._request.fail(
            KernelError(Status.INTERNAL, "the response sender was released without the final flag")
        )


class InProcessRuntime:
    """The server side of ``triton_python_backend_utils`` for one in-process instance."""

    def __init__(
        self,
        *,
        server: ServerHandle,
        loop: asyncio.AbstractEventLoop,
        logger: logging.Logger,
        metrics: MetricRegistry,
        decoupled: bool,
        model_dir: str = "",
    ) -> None:
        self.server = server
        self.loop = loop
        self.logger = logger
        self._metrics = metrics
        self.decoupled = decoupled
        self._model_dir = model_dir
        self._loop_thread = threading.get_ident()
        self.serving = False
        """Between the end of ``initialize`` and the start of ``finalize``: BLS allowed."""

    def model_dir(self) -> str:
        return self._model_dir

    # -- received requests ------------------------------------------------------------------

    def response_channel(self, request: pb_utils.InferenceRequest) -> ResponseChannel:
        source = request._source
        assert isinstance(source, InferenceRequest)
        return _Channel(source, self.decoupled)

    def is_cancelled(self, request: pb_utils.InferenceRequest) -> bool:
        source = request._source
        return bool(isinstance(source, InferenceRequest) and source.is_cancelled())

    # -- BLS ----------------------------------------------------------------------------------

    def _blocking(self, what: str) -> None:
        if threading.get_ident() == self._loop_thread:
            raise pb_utils.TritonModelException(
                f"{what} would block the server's event loop: inside 'async def execute' use"
                " 'await request.async_exec()'"
            )

    def _check_bls(self) -> None:
        if not self.serving:
            raise pb_utils.TritonModelException(BLS_OUTSIDE_EXECUTE)

    @staticmethod
    def _kernel_request(request: pb_utils.InferenceRequest) -> InferenceRequest:
        # Made on the loop: a kernel request binds to the running loop.
        made = InferenceRequest(
            request.model_name(),
            shielded(request._input_arrays()),
            model_version=request._model_version,
            id=request.request_id(),
            requested_output_names=request.requested_output_names(),
            parameters=request._parameter_dict(),
            correlation_id=request.correlation_id(),
            flags=RequestFlags(request.flags() & 3),
            timeout_us=request.timeout(),
        )
        # trace=request.trace() of a received request: the call is a child of its trace
        parent = request._trace._source if request._trace is not None else None
        if isinstance(parent, InferenceRequest) and parent.trace is not None:
            made.trace = parent.trace.child()
        return made

    async def _one(self, request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        # A decoupled model called without decoupled=True: its first response; the rest of the
        # stream is cancelled when the generator closes.
        stream = self.server.infer(self._kernel_request(request))
        try:
            async for response in stream:
                if response.outputs or response.error is not None or response.final:
                    return model_response(response)
        except KernelError as exc:
            return refused(exc)
        finally:
            await _close(stream)
        return pb_utils.InferenceResponse._make([], None, None)

    async def _stream(
        self, request: pb_utils.InferenceRequest, deliver: Callable[[Any], None]
    ) -> None:
        stream = self.server.infer(self._kernel_request(request))
        try:
            async for response in stream:
                deliver(model_response(response))
        except KernelError as exc:
            deliver(refused(exc))
        except asyncio.CancelledError:  # ResponseIterator.cancel(): the stream ends here
            deliver(refused(KernelError(Status.CANCELLED, _BLS_CANCELLED)))
        finally:
            deliver(None)
            await _close(stream)

    def _open_stream(
        self,
        request: pb_utils.InferenceRequest,
        first: Callable[[pb_utils.ResponseIterator], None] | None = None,
    ) -> pb_utils.ResponseIterator:
        """Start a BLS call on a decoupled model; its responses as they arrive.

        ``first`` is called (on the server's loop) with the iterator when the first response
        (or the end) is there."""
        items: queue.SimpleQueue[pb_utils.InferenceResponse | None] = queue.SimpleQueue()
        started = False

        def deliver(item: pb_utils.InferenceResponse | None) -> None:
            nonlocal started
            items.put(item)
            if not started:
                started = True
                if first is not None:
                    first(iterator)

        def responses() -> Iterator[pb_utils.InferenceResponse]:
            while True:
                try:
                    item = items.get_nowait()
                except queue.Empty:
                    self._blocking("iterating a BLS response stream")
                    item = items.get()
                if item is None:
                    return
                yield item

        running: list[concurrent.futures.Future[None]] = []

        def cancel() -> None:
            for future in running:
                future.cancel()

        iterator = pb_utils.ResponseIterator(responses(), cancel)
        running.append(asyncio.run_coroutine_threadsafe(self._stream(request, deliver), self.loop))
        return iterator

    def exec(self, request: pb_utils.InferenceRequest, decoupled: bool) -> Any:
        self._check_bls()
        self._blocking("InferenceRequest.exec()")
        if not decoupled:
            return asyncio.run_coroutine_threadsafe(self._one(request), self.loop).result()
        return self._open_stream(request)

    def async_exec(self, request: pb_utils.InferenceRequest, decoupled: bool) -> Awaitable[Any]:
        self._check_bls()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            raise pb_utils.TritonModelException(
                "async_exec() must be awaited inside 'async def execute'"
            ) from None
        if decoupled:
            # Resolved at the first response: the iterator then yields the others as they come.
            waiter: asyncio.Future[Any] = running.create_future()

            def resolve(iterator: pb_utils.ResponseIterator) -> None:
                if not waiter.done():
                    waiter.set_result(iterator)

            def first(iterator: pb_utils.ResponseIterator) -> None:
                running.call_soon_threadsafe(resolve, iterator)

            self._open_stream(request, first)
            return waiter
        coroutine = self._one(request)
        if running is self.loop:
            return coroutine
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    # -- logging, metrics, model control ----------------------------------------------------

    def log(self, level: int, message: str) -> None:
        self.logger.log(python_log_level(level), "%s", message)

    @property
    def metrics(self) -> MetricsBackend:
        return self._metrics

    def _control(self, what: str, awaitable: Awaitable[None]) -> None:
        try:
            self._blocking(what)
        except BaseException:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise

        async def run() -> None:
            await awaitable

        try:
            asyncio.run_coroutine_threadsafe(run(), self.loop).result()
        except KernelError as exc:
            raise pb_utils.TritonModelException(exc.message) from exc

    def load_model(self, name: str, config: str, files: Mapping[str, bytes] | None) -> None:
        stripped = {k.removeprefix("file:"): v for k, v in (files or {}).items()}
        self._control(
            "load_model()", self.server.load_model(name, config or None, stripped or None)
        )

    def unload_model(self, name: str, unload_dependents: bool) -> None:
        self._control(
            "unload_model()",
            self.server.unload_model(name, unload_dependents=unload_dependents),
        )

    def is_model_ready(self, name: str, version: str) -> bool:
        number = int(version) if version else -1
        if not self.server.is_model_ready(name, number):
            return False
        if threading.get_ident() == self._loop_thread:
            return True  # cannot wait here for the model's own readiness hook
        # as the ready endpoints answer: the model's instances' readiness hooks too
        future = asyncio.run_coroutine_threadsafe(self.server.model_ready(name, number), self.loop)
        return future.result()


def _reschedule(
    requests: Sequence[InferenceRequest], wrapped: Sequence[pb_utils.InferenceRequest]
) -> None:
    """Hand back to the kernel's scheduler the requests ``execute`` released with
    ``TRITONSERVER_REQUEST_RELEASE_RESCHEDULE`` (before the kernel settles the batch)."""
    for request, item in zip(requests, wrapped, strict=True):
        if item._rescheduled():
            request.reschedule()


def _ready_answer(answer: object, logger: logging.Logger, name: str) -> bool:
    """An ``is_ready()`` result as readiness: True only for True (Triton's rule)."""
    if not isinstance(answer, bool):
        logger.error(
            "is_ready() of instance '%s' returned %s, expected a bool: not ready",
            name,
            type(answer).__name__,
        )
    return answer is True


class _ModelLoop:
    """An instance's own event loop, in a thread of its own, where the model's coroutines run
    (``async def execute``, async hooks), as in Triton's stub: a model blocking its loop (a
    blocking ``exec()``, iterating a BLS response stream) blocks only itself, never the
    server's loop."""

    __slots__ = ("_loop", "_name", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        """The loop (started on first use)."""
        if self._loop is None:
            loop = self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name=f"triton-model-loop {self._name}", daemon=True
            )
            self._thread.start()
        return self._loop

    def stop(self) -> None:
        """Stop the loop and its thread (blocking: call from a worker thread)."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_BACKGROUND_GRACE_SECONDS)
        if not thread.is_alive():
            loop.close()


class InProcessInstance(ModelInstance):
    """An instance running its own copy of ``model.py`` in the server process."""

    def __init__(self, context: InstanceContext, model: PythonModel) -> None:
        super().__init__(context)
        self._model = model
        self._decoupled = context.model.decoupled
        self._runner = ModelRunner(model.model_file, context.name, self._decoupled)
        self._runtime: InProcessRuntime | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._loop = _ModelLoop(context.name)
        self._background: set[concurrent.futures.Future[None]] = set()
        self._outputs = tuple(o.name for o in context.model.config.output)

    async def initialize(self) -> None:
        loop = asyncio.get_running_loop()
        model = self.context.model
        self._runtime = InProcessRuntime(
            server=model.server,
            loop=loop,
            logger=self.context.logger,
            metrics=self._model.metrics,
            decoupled=self._decoupled,
            model_dir=str(model.path),
        )
        try:
            await anyio.to_thread.run_sync(self._load)
        except BaseException:
            await anyio.to_thread.run_sync(self._loop.stop)
            raise
        self._runtime.serving = True
        if getattr(self._runner.model, "is_ready", None) is None:
            # No readiness hook: the kernel then asks nothing of this instance.
            self.ready = super().ready  # type: ignore[method-assign, assignment]
        if not self._runner.is_async:
            # A plain ``def execute`` model: hand the kernel a plain ``def`` so it runs the
            # batches on the instance's own thread (the kernel looks at ``execute`` only after
            # ``initialize``), which is cheaper than a hop through anyio's thread pool per batch.
            self.execute = self._execute_sync  # type: ignore[method-assign, assignment]

    def _load(self) -> None:
        runtime = self._runtime
        assert runtime is not None
        set_fallback_runtime(runtime)
        try:
            with installed_runtime(runtime):
                self._runner.load()
                self._wait(self._runner.initialize(self._model.instance_args(self.context)))
        except BaseException:
            self._runner.close()
            forget_fallback_runtime(runtime)
            raise

    async def _in_runtime(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` with this instance's runtime current (on the model's loop)."""
        assert self._runtime is not None
        token = push_runtime(self._runtime)
        try:
            return await awaitable
        finally:
            pop_runtime(token)

    def _on_model_loop(self, awaitable: Awaitable[Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(self._in_runtime(awaitable), self._loop.get())

    def _wait(self, result: object) -> object:
        """The value of ``result``; an awaitable (async hook) runs on the model's loop first."""
        if not inspect.isawaitable(result):
            return result
        return self._on_model_loop(result).result()

    def ready(self) -> bool:
        """The model's ``is_ready()`` (recent Triton's hook): ready only when it returns True."""
        runtime = self._runtime
        hook = getattr(self._runner.model, "is_ready", None)
        if runtime is None or hook is None:
            return runtime is not None
        with installed_runtime(runtime):
            answer = self._wait(hook())
        return _ready_answer(answer, self.context.logger, self.context.name)

    def _wrap(self, requests: Sequence[InferenceRequest]) -> list[pb_utils.InferenceRequest]:
        runtime = self._runtime
        outputs = self._outputs
        new = _ReceivedRequest.__new__
        wrapped: list[pb_utils.InferenceRequest] = []
        for request in requests:
            item = new(_ReceivedRequest)
            item._source = request
            item._runtime = runtime
            item._inputs = request.inputs
            item._tensors = None
            item._sender = None
            item._trace = None
            item._requested = request.requested_output_names or outputs
            item._model_name = ""
            item._model_version = -1
            item._release_flags = pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL
            wrapped.append(item)
        return wrapped

    async def execute(self, requests: Sequence[InferenceRequest]) -> None:
        if self._runner.is_async:
            await self._execute_async(requests)
        else:
            await anyio.to_thread.run_sync(self._execute_sync, requests, limiter=self._limiter)

    def _failed(self, exc: BaseException) -> KernelError:
        error = exc if isinstance(exc, ExecuteError) else self._runner.raised(exc)
        self.context.logger.error("%s", error, exc_info=not isinstance(exc, ExecuteError))
        return KernelError(Status.INTERNAL, str(error))

    def _execute_sync(self, requests: Sequence[InferenceRequest]) -> None:
        assert self._runtime is not None
        token = push_runtime(self._runtime)
        try:
            wrapped = self._wrap(requests)
            try:
                result = self._runner.execute(wrapped)
                if inspect.isawaitable(result):  # a plain def returning a coroutine
                    result = self._wait(result)
                responses = self._runner.check(wrapped, result)
            except Exception as exc:
                raise self._failed(exc) from exc
            _reschedule(requests, wrapped)
            if responses is not None:
                self._deliver(requests, responses)
        finally:
            pop_runtime(token)

    async def _execute_async(self, requests: Sequence[InferenceRequest]) -> None:
        wrapped = self._wrap(requests)
        if self._decoupled:
            # As in Triton, a decoupled coroutine runs in the background and the next
            # batch may start meanwhile. Taking the senders keeps the requests open.
            for request in requests:
                request.response_sender()
            future = asyncio.run_coroutine_threadsafe(
                self._in_background(requests, wrapped), self._loop.get()
            )
            self._background.add(future)
            future.add_done_callback(self._background.discard)
            return
        try:
            result = await asyncio.wrap_future(self._on_model_loop(self._runner.execute(wrapped)))
            responses = self._runner.check(wrapped, result)
        except Exception as exc:
            raise self._failed(exc) from exc
        _reschedule(requests, wrapped)
        if responses is not None:
            self._deliver(requests, responses)

    async def _in_background(
        self, requests: Sequence[InferenceRequest], wrapped: list[pb_utils.InferenceRequest]
    ) -> None:
        try:
            self._runner.check(wrapped, await self._in_runtime(self._runner.execute(wrapped)))
        except Exception as exc:
            error = self._failed(exc)
            for request in requests:
                request.fail(error)
            return
        for request, item in zip(requests, wrapped, strict=True):
            if item._sender is None:  # never asked for its sender: nobody will answer it
                request.fail(
                    KernelError(
                        Status.INTERNAL,
                        f"model '{self.context.model.name}' returned from execute without"
                        " answering the request",
                    )
                )

    def _deliver(
        self,
        requests: Sequence[InferenceRequest],
        responses: Sequence[pb_utils.InferenceResponse | None],
    ) -> None:
        for request, response in zip(requests, responses, strict=True):
            if response is None:
                continue
            error = response._error
            try:
                if error is None:
                    request.respond(response._outputs(), parameters=response._parameters)
                else:
                    request.respond(error=kernel_error(error), parameters=response._parameters)
            except KernelError:
                self.context.logger.warning(
                    "request %r was already answered through its response sender", request.id
                )

    async def finalize(self) -> None:
        background = list(self._background)
        if background:
            with anyio.move_on_after(_BACKGROUND_GRACE_SECONDS):
                await asyncio.gather(
                    *(asyncio.wrap_future(f) for f in background), return_exceptions=True
                )
            for future in background:
                future.cancel()
        await anyio.to_thread.run_sync(self._finalize)

    def _finalize(self) -> None:
        runtime = self._runtime
        assert runtime is not None
        runtime.serving = False
        try:
            with installed_runtime(runtime):
                self._wait(self._runner.finalize())
        except Exception:
            self.context.logger.exception("finalize of instance '%s' raised", self.context.name)
        finally:
            self._runner.close()
            forget_fallback_runtime(runtime)
            self._loop.stop()
