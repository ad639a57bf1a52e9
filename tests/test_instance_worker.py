"""Each :class:`InstanceWorker` variant, driven through a real :class:`ModelVersion` without a
server: the variant picked from what the instance implements, every request answered with its
own input, each batch accounted once, nothing left admitted or executing, and what an unload
does to the batches still out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import numpy as np
import pytest

from kernel import InferenceRequest, InferenceResponse
from kernel._backend import Backend, InstanceContext, Model, ModelInstance
from kernel._config_text import parse_model_config
from kernel._errors import Status
from kernel._instance_worker import (
    AsyncWorker,
    InstanceWorker,
    SubmitWorker,
    ThreadWorker,
)
from kernel._models import ModelVersion, SchedulerFactory
from kernel._repository import normalize_config
from kernel._scheduling import DirectScheduler
from kernel.testing import model_context

CONFIG = """
name: "m"
max_batch_size: {batch}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
{extra}
"""


def _answer(requests: Sequence[InferenceRequest]) -> None:
    for request in requests:
        request.respond({"OUTPUT0": request.inputs["INPUT0"]})


class PlainInstance(ModelInstance):
    """A plain ``def execute``: runs on the instance's thread; records the threads and batches."""

    delay = 0.0
    threads: set[str]
    batches: list[int]

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        self.threads, self.batches = set(), []

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(requests))
        if self.delay:
            time.sleep(self.delay)
        _answer(requests)


class AsyncInstance(ModelInstance):
    """An ``async def execute`` allowing ``overlapping_batches`` calls; counts how many ran
    at once. ``hang`` makes it wait until cancelled."""

    delay = 0.01
    hang = False

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        self.running = self.most = 0

    async def execute(self, requests: Sequence[InferenceRequest]) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.hang:
                await anyio.sleep_forever()
            await anyio.sleep(self.delay)
        finally:
            self.running -= 1
        _answer(requests)


class OverlappingInstance(AsyncInstance):
    overlapping_batches = 3


class SubmitInstance(AsyncInstance):
    """Implements ``submit``: answered from a timer callback, up to 2 batches out at once."""

    overlapping_batches = 2

    def submit(
        self, requests: Sequence[InferenceRequest], done: Callable[[BaseException | None], None]
    ) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.hang:
            return  # never done: only an unload ends the batch

        def finish() -> None:
            self.running -= 1
            _answer(requests)
            done(None)

        asyncio.get_running_loop().call_later(self.delay, finish)


class _Model(Model):
    instance_class: type[ModelInstance] = PlainInstance

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return self.instance_class(context)


class _Backend(Backend):
    def __init__(self, instance_class: type[ModelInstance]) -> None:
        self.instance_class = instance_class

    def create_model(self, context: object) -> Model:
        model = _Model(context)  # type: ignore[arg-type]
        model.instance_class = self.instance_class
        return model


@asynccontextmanager
async def _serving(
    tmp_path: Path,
    instance_class: type[ModelInstance],
    *,
    batch: int = 0,
    count: int = 1,
    extra: str = "",
    drain_timeout: float = 10.0,
    scheduler_factory: SchedulerFactory | None = None,
) -> AsyncIterator[ModelVersion]:
    """A loaded version of model ``m`` served by ``instance_class``; unloaded on the way out."""
    text = CONFIG.format(batch=batch, count=count, extra=extra)
    config = normalize_config(parse_model_config(text, "config.pbtxt"), "config.pbtxt", gpus=0)
    context = model_context(tmp_path, config)
    context.auto_complete = False
    version = ModelVersion(
        _Backend(instance_class),
        context,
        drain_timeout=drain_timeout,
        scheduler_factory=scheduler_factory,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(version.run)
        try:
            yield version
        finally:
            version.stop()
            with anyio.fail_after(30):
                await version.finished.wait()


async def _infer(version: ModelVersion, value: float) -> InferenceResponse:
    """One request the way the server admits and settles it."""
    rows = (1, 1) if version.config.max_batch_size else (1,)
    request = InferenceRequest("m", {"INPUT0": np.full(rows, value, np.float32)})
    request.enqueued_ns = time.monotonic_ns()
    version.scheduler.enqueue(request)
    version.admissions.admit(request)
    try:
        with anyio.fail_after(30):
            return await request.final_response()
    finally:
        version.admissions.settle(request)


async def _answers_each_request(version: ModelVersion, count: int = 12) -> None:
    responses = await asyncio.gather(*(_infer(version, n) for n in range(count)))
    for n, response in enumerate(responses):
        assert response.error is None
        assert float(response.outputs["OUTPUT0"].reshape(-1)[0]) == n
    for _ in range(100):  # the batch is accounted just after its answers went out
        if version.stats.inference_count == count:
            break
        await asyncio.sleep(0.01)
    assert version.stats.inference_count == count
    assert (version.in_flight, version.executing, version.pending()) == (0, 0, 0)


async def test_a_plain_def_instance_gets_a_thread_worker(tmp_path: Path) -> None:
    async with _serving(tmp_path, PlainInstance) as version:
        [worker] = version.workers
        assert isinstance(worker, ThreadWorker)
        assert worker.depth == DirectScheduler.batches_ahead  # one instance: the scheduler's
        await _answers_each_request(version)
        instance = worker.item.instance
        assert isinstance(instance, PlainInstance)
        assert instance.threads == {f"instance {worker.item.context.name}"}  # never the loop
        assert worker.queued == 0
    assert version.workers == []


async def test_a_thread_worker_behind_a_batching_scheduler_hands_one_batch(
    tmp_path: Path,
) -> None:
    extra = "dynamic_batching { max_queue_delay_microseconds: 20000 }"
    async with _serving(tmp_path, PlainInstance, batch=8, extra=extra) as version:
        [worker] = version.workers
        assert isinstance(worker, ThreadWorker)
        assert worker.depth == 1  # a batch forms while the previous one runs
        await _answers_each_request(version, 8)
        instance = worker.item.instance
        assert isinstance(instance, PlainInstance)
        assert sum(instance.batches) == 8
        assert len(instance.batches) < 8  # requests were batched


async def test_several_instances_hand_each_at_most_two_batches(tmp_path: Path) -> None:
    async with _serving(tmp_path, PlainInstance, count=2) as version:
        assert [type(w) for w in version.workers] == [ThreadWorker, ThreadWorker]
        assert [w.depth for w in version.workers] == [2, 2]  # type: ignore[attr-defined]
        assert [w.index for w in version.workers] == [0, 1]
        await _answers_each_request(version)


@pytest.mark.parametrize(("instance_class", "most"), [(AsyncInstance, 1), (OverlappingInstance, 3)])
async def test_an_async_instance_gets_an_async_worker_with_its_overlap(
    tmp_path: Path, instance_class: type[AsyncInstance], most: int
) -> None:
    async with _serving(tmp_path, instance_class) as version:
        [worker] = version.workers
        assert isinstance(worker, AsyncWorker)
        assert worker.ahead == most
        await _answers_each_request(version)
        instance = worker.item.instance
        assert isinstance(instance, AsyncInstance)
        assert instance.most == most  # never more at once than it allows


async def test_an_overlapping_scheduler_runs_each_batch_at_once(tmp_path: Path) -> None:
    class Overlapping(DirectScheduler):
        overlapping = True  # as the ensemble's: batches never wait for each other

    async with _serving(
        tmp_path, AsyncInstance, scheduler_factory=lambda config: Overlapping()
    ) as version:
        [worker] = version.workers
        assert isinstance(worker, AsyncWorker)
        assert worker.ahead is None
        await _answers_each_request(version, 6)
        instance = worker.item.instance
        assert isinstance(instance, AsyncInstance)
        assert instance.most > 1  # AsyncInstance allows one, the scheduler overrides


async def test_a_submit_instance_gets_a_submit_worker(tmp_path: Path) -> None:
    async with _serving(tmp_path, SubmitInstance) as version:
        [worker] = version.workers
        assert isinstance(worker, SubmitWorker)
        assert worker.ahead == 2
        await _answers_each_request(version)
        instance = worker.item.instance
        assert isinstance(instance, SubmitInstance)
        assert instance.most == 2


async def test_a_submit_worker_behind_a_batching_scheduler_takes_batches(tmp_path: Path) -> None:
    extra = "dynamic_batching { }"
    async with _serving(tmp_path, SubmitInstance, batch=8, extra=extra) as version:
        [worker] = version.workers
        assert isinstance(worker, SubmitWorker)
        # it runs what it holds in order: one batch waits behind the running one, as in Triton
        assert worker.ahead == 2
        await _answers_each_request(version)
        instance = worker.item.instance
        assert isinstance(instance, SubmitInstance)
        assert instance.most <= 2


async def test_workers_behind_the_sequence_batcher_hand_one_batch_at_a_time(
    tmp_path: Path,
) -> None:
    extra = "sequence_batching { }"
    async with _serving(tmp_path, SubmitInstance, batch=8, extra=extra) as version:
        [worker] = version.workers
        assert isinstance(worker, SubmitWorker)
        assert worker.ahead == 1  # a sequence's next request waits for its state
    async with _serving(tmp_path, PlainInstance, batch=8, extra=extra) as version:
        [worker] = version.workers
        assert isinstance(worker, ThreadWorker)
        assert worker.depth == 1


@pytest.mark.parametrize("instance_class", [SubmitInstance, OverlappingInstance])
async def test_an_unload_fails_the_batches_still_out(
    tmp_path: Path, instance_class: type[AsyncInstance]
) -> None:
    """A batch that never finishes: the drain gives up after its timeout, the worker fails
    the batch on the way out, and the version finalizes."""
    instance_class.hang = True
    try:
        async with _serving(tmp_path, instance_class, drain_timeout=0.2) as version:
            tasks = [asyncio.ensure_future(_infer(version, n)) for n in range(2)]
            with anyio.fail_after(10):
                while version.executing < 2:  # noqa: ASYNC110 - bounded, a test's wait
                    await asyncio.sleep(0.01)
        # the drain timed out (it would wait for ever): _serving bounds the unload
        for task in tasks:
            response = await task
            assert response.error is not None
            assert response.error.status is Status.UNAVAILABLE
            assert "is unloading" in response.error.message
        assert (version.in_flight, version.executing) == (0, 0)
    finally:
        instance_class.hang = False


async def test_the_variant_is_picked_once_from_the_initialized_instance(tmp_path: Path) -> None:
    """``for_instance`` looks at ``execute`` after ``initialize`` (an instance may pick it
    there) and the version builds its workers only then."""

    class Picks(PlainInstance):
        def initialize(self) -> None:
            self.execute = self._async_execute  # type: ignore[method-assign]

        async def _async_execute(self, requests: Sequence[InferenceRequest]) -> None:
            _answer(requests)

    async with _serving(tmp_path, Picks) as version:
        [worker] = version.workers
        assert type(worker) is AsyncWorker
        assert isinstance(worker, InstanceWorker)
        await _answers_each_request(version, 4)


async def test_an_unload_waits_for_the_requests_admitted(tmp_path: Path) -> None:
    """The drain waits (on the admissions' event) for a request still executing: it gets its
    answer, where a worker cancelled at once would fail it as unloading."""
    AsyncInstance.delay = 0.3
    try:
        async with _serving(tmp_path, AsyncInstance) as version:
            task = asyncio.ensure_future(_infer(version, 7))
            with anyio.fail_after(10):
                while not version.executing:  # noqa: ASYNC110 - bounded, a test's wait
                    await asyncio.sleep(0.01)
            version.stop()
        response = await task
        assert response.error is None
        assert float(response.outputs["OUTPUT0"].reshape(-1)[0]) == 7
    finally:
        AsyncInstance.delay = 0.01
