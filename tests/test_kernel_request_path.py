"""The request path's callback feeding: an instance that implements ``ModelInstance.submit``
behind a :class:`DirectScheduler` gets requests from within ``enqueue`` while it has free slots,
and a freed slot takes the next queued request at once, in arrival order, skipping (and
failing) requests cancelled while they waited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel import InferenceRequest
from kernel._instance_worker import Feeder
from kernel._scheduling import DirectScheduler
from kernel.testing import run_server

NO_ENDPOINTS: dict[str, Any] = {"http_port": None, "grpc_port": None, "metrics_port": None}


class _Instance:
    """Records each request started and the release of its slot; with ``sync_fail`` releases
    at once (an instance failing in ``submit``)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[InferenceRequest, Callable[[], None]]] = []
        self.sync_fail = False
        self.feeder: Feeder | None = None

    def start(self, request: InferenceRequest) -> None:
        assert self.feeder is not None
        self.submitted.append((request, self.feeder.release))
        if self.sync_fail:
            self.feeder.release()


def _feeder(slots: int) -> tuple[DirectScheduler, _Instance, Feeder]:
    scheduler = DirectScheduler()
    instance = _Instance()
    feeder = instance.feeder = Feeder(scheduler, slots, instance.start)
    feeder.feed()
    return scheduler, instance, feeder


def _requests(count: int) -> list[InferenceRequest]:
    return [InferenceRequest("m", {}, id=str(n)) for n in range(count)]


def test_requests_reach_free_slots_within_enqueue_and_freed_slots_take_the_next() -> None:
    scheduler, instance, feeder = _feeder(2)
    requests = _requests(5)
    for request in requests:
        scheduler.enqueue(request)
    assert [r for r, _ in instance.submitted] == requests[:2]
    assert scheduler.pending() == 3
    instance.submitted[0][1]()  # the first batch is done: its slot takes the next request
    assert [r for r, _ in instance.submitted] == requests[:3]
    requests[3].cancel()  # cancelled while queued: failed on the way, never submitted
    instance.submitted[1][1]()
    assert [r for r, _ in instance.submitted] == [*requests[:3], requests[4]]
    assert requests[3].answered
    assert scheduler.pending() == 0
    for _, release in instance.submitted[2:]:
        release()
    late = InferenceRequest("m", {})
    scheduler.enqueue(late)  # two slots free and waiting: submitted at once
    assert instance.submitted[-1][0] is late
    feeder.stop()
    scheduler.enqueue(InferenceRequest("m", {}))  # a stopped feeder takes nothing
    assert scheduler.pending() == 1


def test_a_long_queue_failing_in_submit_is_fed_without_recursion() -> None:
    scheduler, instance, _ = _feeder(1)
    requests = _requests(5000)
    for request in requests:
        scheduler.enqueue(request)
    assert len(instance.submitted) == 1
    instance.sync_fail = True
    instance.submitted[0][1]()
    assert len(instance.submitted) == 5000
    assert scheduler.pending() == 0


@pytest.mark.parametrize("allowed", [1, 2])
async def test_a_submit_instance_answers_every_request_in_order(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    allowed: int,
) -> None:
    """Through the server: more requests than slots, each answered with its own input, the
    model's statistics count each once and nothing stays queued."""
    parameters = {"overlapping_batches": str(allowed), "sleep_ms": "5"}
    add_model(repo, "submit", kt_config("submit", parameters=parameters))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        arrays = [np.full((1, 4), n, np.float32) for n in range(12)]
        results = await asyncio.gather(
            *(
                srv.server.infer_once(InferenceRequest("submit", {"INPUT0": a, "INPUT1": a}))
                for a in arrays
            )
        )
        for array, result in zip(arrays, results, strict=True):
            assert result.error is None
            np.testing.assert_array_equal(result.outputs["OUTPUT0"], array)
        stats = srv.server.model_statistics("submit")[0]
        for _ in range(100):  # recorded just after the answers go out
            if stats.execution_count == len(arrays):
                break
            await asyncio.sleep(0.01)
        assert stats.execution_count == len(arrays)
        assert srv.server.route("submit").pending() == 0


async def test_a_request_cancelled_while_queued_never_reaches_a_submit_instance(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    parameters = {"overlapping_batches": "1", "sleep_ms": "300"}
    add_model(repo, "submit", kt_config("submit", parameters=parameters))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        a = np.ones((1, 4), np.float32)

        def infer() -> asyncio.Task[Any]:
            request = InferenceRequest("submit", {"INPUT0": a, "INPUT1": a})
            return asyncio.create_task(srv.server.infer_once(request))

        first = infer()
        await asyncio.sleep(0.05)
        second = infer()
        await asyncio.sleep(0.05)
        second.cancel()
        third = infer()
        assert (await first).error is None
        assert (await third).error is None
        with pytest.raises(asyncio.CancelledError):
            await second
        stats = srv.server.model_statistics("submit")[0]
        for _ in range(100):
            if stats.execution_count == 2:
                break
            await asyncio.sleep(0.01)
        assert stats.execution_count == 2


async def test_a_plain_def_instance_fed_by_callbacks_answers_and_counts_every_request(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    """The instance thread's slots are the feeder's: more requests than slots, each answered
    with its own input, each counted once, nothing left queued or executing."""
    add_model(repo, "slow", kt_config("sleep", parameters={"sleep_ms": "2"}))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        arrays = [np.full((1, 4), n, np.float32) for n in range(20)]
        results = await asyncio.gather(
            *(
                srv.server.infer_once(InferenceRequest("slow", {"INPUT0": a, "INPUT1": a}))
                for a in arrays
            )
        )
        for array, result in zip(arrays, results, strict=True):
            assert result.error is None
            np.testing.assert_array_equal(result.outputs["OUTPUT0"], array)
        version = srv.server.route("slow")
        assert version.stats.execution_count == len(arrays)
        assert version.stats.success.count == len(arrays)
        assert (version.pending(), version.executing, version.in_flight) == (0, 0, 0)
