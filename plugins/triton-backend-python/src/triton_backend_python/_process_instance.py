"""A Python model instance in a process of its own, brought back when the process dies.

When the process dies, the requests it held fail at once with the reason (``_process.py``);
:class:`ProcessInstance` then starts a new process and re-runs ``initialize`` (backoff between
failed attempts); requests that arrive meanwhile wait for it. Restarts are logged and counted
in the ``nv_python_stub_restarts`` metric. A model whose process keeps failing to come back
becomes ``UNAVAILABLE`` with the reason; the server keeps serving its other models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from kernel import InferenceRequest, InstanceContext, KernelError, ModelInstance, Status
from triton_backend_python._process import ModelProcess

if TYPE_CHECKING:
    from triton_backend_python._backend import PythonModel

__all__ = ["RESTARTS_METRIC", "ProcessInstance"]

RESTART_ATTEMPTS = 5
"""Failed attempts at bringing a dead model process back before the model is UNAVAILABLE."""
RESTART_BACKOFF_SECONDS = (0.0, 0.5, 1.0, 2.0, 4.0)
"""The wait before each attempt: the first is immediate, so a one-off crash costs little."""
RESTART_WAIT_SECONDS = 60.0
"""How long a request waits for a restarting model process before it gets an error."""
RESTARTS_METRIC = "nv_python_stub_restarts"
"""The counter of model process restarts, labelled by model and version."""


class ProcessInstance(ModelInstance):
    """An instance whose model runs in a process of its own, restarted when it dies."""

    # The process runs batches one at a time in the order they came: the next batches go to it
    # ahead (as many as the scheduler allows), so it starts the next as soon as one returns.
    # A request cancelled while it waits there still reaches the model, which can ask
    # ``request.is_cancelled()``.
    overlapping_batches = 8

    def __init__(self, context: InstanceContext, model: PythonModel) -> None:
        super().__init__(context)
        self._model = model
        self._process: ModelProcess | None = None
        self._serving = asyncio.Event()
        """Set while a live process serves (or once the instance gave up: see ``_failed``)."""
        self._failed: str | None = None
        self._restarter: asyncio.Task[None] | None = None
        self._closing = False
        self.restarts = 0
        """How many times a dead process of this instance was replaced."""
        self._restart_series: tuple[object, object] | None = None
        self._waiting: set[asyncio.Future[None]] = set()
        """Batches that arrived while no live process was there (see :meth:`submit`)."""

    @property
    def process(self) -> ModelProcess | None:
        """The current model process (tests kill it from outside)."""
        return self._process

    async def _launch(self) -> ModelProcess:
        """A started process whose model ``initialize`` returned.

        :raises KernelError: ``UNAVAILABLE`` with the reason when it did not come up.
        """
        context = self.context
        process = ModelProcess(label=context.name, model=self._model, logger=context.logger)
        await process.start()
        try:
            (error,) = await process.command(
                (
                    "init",
                    str(self._model.model_file),
                    context.name,
                    context.model.decoupled,
                    tuple(o.name for o in context.model.config.output),
                    self._model.instance_args(context),
                )
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await process.finalize()
            raise
        if error is not None:
            await process.finalize()
            raise KernelError(
                Status.UNAVAILABLE, f"failed to initialize instance '{context.name}': {error}"
            )
        process.on_death = self._on_death
        return process

    async def initialize(self) -> None:
        self._process = await self._launch()
        self._count_restarts(0)
        self._serving.set()

    def _count_restarts(self, count: int) -> None:
        """Add ``count`` to the model's restart counter (made at load, so it starts at 0)."""
        registry = self._model.metrics
        if self._restart_series is None:
            model = self.context.model
            family = registry.create_family(
                RESTARTS_METRIC,
                "Number of times a dead Python model process (stub) was restarted",
                0,
            )
            labels = {"model": model.name, "version": str(model.version)}
            self._restart_series = (family, registry.create_metric(family, labels, None))
        if count:
            registry.update(self._restart_series[1], "increment", count)

    def _on_death(self, reason: str) -> None:
        if self._closing or self._restarter is not None:
            return
        self._serving.clear()
        self._restarter = asyncio.create_task(self._restart(reason))

    async def _restart(self, reason: str) -> None:
        """Bring the instance back: new process, ``initialize`` again, with backoff."""
        logger = self.context.logger
        name = self.context.name
        try:
            for attempt, delay in enumerate(RESTART_BACKOFF_SECONDS[:RESTART_ATTEMPTS], 1):
                await asyncio.sleep(delay)
                logger.warning(
                    "restarting the model process of '%s' (attempt %d of %d) after: %s",
                    name,
                    attempt,
                    RESTART_ATTEMPTS,
                    reason,
                )
                try:
                    process = await self._launch()
                except KernelError as exc:
                    reason = exc.message
                    continue
                self._process = process
                self.restarts += 1
                self._count_restarts(1)
                logger.warning(
                    "the model process of '%s' was restarted (pid %s, restart %d)",
                    name,
                    process.pid,
                    self.restarts,
                )
                return
            self._failed = (
                f"the model process of '{name}' died and did not come back after"
                f" {RESTART_ATTEMPTS} attempts; last error: {reason}"
            )
            logger.error("%s", self._failed)
            self.context.model.set_unavailable(self._failed)
        finally:
            self._restarter = None
            self._serving.set()

    async def execute(self, requests: Sequence[InferenceRequest]) -> None:
        if not self._serving.is_set():
            with anyio.move_on_after(RESTART_WAIT_SECONDS):
                await self._serving.wait()
        process = self._process
        if self._failed is not None:
            raise KernelError(Status.UNAVAILABLE, self._failed)
        if process is None or process.dead is not None:
            raise KernelError(
                Status.UNAVAILABLE,
                process.dead if process is not None and process.dead else "not started",
            )
        await process.execute(requests)

    async def ready(self) -> bool:
        """The model's ``is_ready()`` (if any) when a live process serves. While a dead
        process is being replaced the model stays ready (requests wait for the restart) until
        the instance gives up (the model is then UNAVAILABLE)."""
        process = self._process
        if self._failed is not None or process is None:
            return False
        if not self._serving.is_set() or process.dead is not None:
            return True
        try:
            return await process.model_ready()
        except KernelError:
            return self._failed is None and not self._serving.is_set()

    def submit(
        self, requests: Sequence[InferenceRequest], done: Callable[[BaseException | None], None]
    ) -> None:
        """The kernel's fast path (no task per batch): straight to a live process; while a
        restart is under way (or after the instance gave up), the general path decides."""
        process = self._process
        if process is not None and process.dead is None and self._serving.is_set():
            process.submit(requests, done)
            return
        task = asyncio.ensure_future(self.execute(requests))
        self._waiting.add(task)

        def finished(task: asyncio.Future[None]) -> None:
            self._waiting.discard(task)
            done(
                KernelError(Status.UNAVAILABLE, f"instance '{self.context.name}' is stopping")
                if task.cancelled()
                else task.exception()
            )

        task.add_done_callback(finished)

    async def finalize(self) -> None:
        self._closing = True
        for task in list(self._waiting):
            task.cancel()
        restarter = self._restarter
        if restarter is not None:
            restarter.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(restarter, return_exceptions=True)
        if self._process is not None:
            error = await self._process.finalize()
            if error is not None:
                self.context.logger.error(
                    "finalize of instance '%s' raised: %s", self.context.name, error
                )
        if self._restart_series is not None:
            family, series = self._restart_series
            self._restart_series = None
            registry = self._model.metrics
            registry.release_metric(series)
            registry.release_family(family)
