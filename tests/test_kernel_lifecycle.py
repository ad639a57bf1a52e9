"""Triton's lifecycle order, parallel instance loading, instance groups and cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kernel import InferenceRequest, Status
from kernel._statistics import ModelStatistics
from kernel.testing import RunningServer, run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def _options(log: Path, backend: str = "kerneltest") -> dict[str, object]:
    return {**NO_ENDPOINTS, "backend_config": {backend: {"lifecycle_log": str(log)}}}


async def test_lifecycle_order(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    add_model(repo, "m", kt_config("addsub", count=2))
    async with run_server(repo, **_options(log)) as srv:
        assert srv.server.is_model_ready("m")
    assert log.read_text().splitlines() == [
        "backend.initialize kerneltest",
        "model.initialize m 1",
        "instance.initialize m_0_0 KIND_CPU",
        "instance.initialize m_0_1 KIND_CPU",
        "instance.finalize m_0_1",
        "instance.finalize m_0_0",
        "model.finalize m 1",
        "backend.finalize",
    ]


async def test_backend_initializes_once_lazily_for_many_models(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    for name in ("a", "b", "c"):
        add_model(repo, name, kt_config("identity"))
    async with run_server(repo, **_options(log)):
        pass
    events = log.read_text().splitlines()
    assert events.count("backend.initialize kerneltest") == 1
    assert events[0] == "backend.initialize kerneltest"
    assert events[-1] == "backend.finalize"


async def _max_concurrent_initializations(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str], backend: str
) -> int:
    # Each instance sleeps 300 ms in initialize; count how many were initializing at once by
    # sampling the thread pool from the loop while the model loads.
    add_model(
        repo,
        "slow",
        kt_config(backend=backend, count=4, parameters={"init_sleep_ms": "300"}),
    )
    import threading

    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            busy = sum(1 for t in threading.enumerate() if "AnyIO worker" in t.name and _busy(t))
            peak = max(peak, busy)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sample())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert srv.server.is_model_ready("slow")
        done.set()
    await task
    return peak


def _busy(thread: object) -> bool:
    import sys
    import traceback

    frame = sys._current_frames().get(getattr(thread, "ident", -1))
    return frame is not None and any(
        "kernel_test_backends" in f.filename for f in traceback.extract_stack(frame)
    )


async def test_parallel_instance_loading_runs_initializations_concurrently(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    assert (
        await _max_concurrent_initializations(repo, add_model, kt_config, "kerneltest_parallel")
        >= 3
    )


async def test_without_parallel_loading_instances_initialize_one_at_a_time(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    assert await _max_concurrent_initializations(repo, add_model, kt_config, "kerneltest") == 1


async def _infer_concurrently(srv: RunningServer, model: str, count: int) -> ModelStatistics:
    """Send ``count`` requests at once, check each succeeded, and return the model's statistics
    once they counted every execution."""
    a = np.ones((1, 4), np.float32)
    requests = (InferenceRequest(model, {"INPUT0": a, "INPUT1": a}) for _ in range(count))
    results = await asyncio.gather(*(srv.server.infer_once(r) for r in requests))
    assert all(r.error is None for r in results)
    stats = srv.server.model_statistics(model)[0]
    for _ in range(100):  # statistics are recorded just after the answers go out
        if stats.execution_count == count:
            break
        await asyncio.sleep(0.01)
    assert stats.execution_count == count
    return stats


async def test_instances_execute_concurrently_one_batch_each(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "sleepy", kt_config("sleep", count=2, parameters={"sleep_ms": "200"}))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        stats = await _infer_concurrently(srv, "sleepy", 4)
        assert stats.inference_count == 4
        assert set(stats.batch_stats) == {1}


@pytest.mark.parametrize(("count", "in_scheduler"), [(1, 0), (2, 2)])
async def test_plain_def_instances_take_requests_ahead(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    count: int,
    in_scheduler: int,
) -> None:
    """Unbatched requests for a plain ``def execute``: one instance's thread holds up to eight
    of them, each of several instances one besides the running one; those waiting anywhere
    count as pending, and one instance runs them in arrival order."""
    add_model(repo, "sleepy", kt_config("sleep", count=count, parameters={"sleep_ms": "100"}))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        version = srv.server.route("sleepy")
        finished: list[int] = []

        async def one(i: int) -> None:
            a = np.full((1, 4), i, np.float32)
            response = await srv.server.infer_once(
                InferenceRequest("sleepy", {"INPUT0": a, "INPUT1": a})
            )
            assert response.error is None
            finished.append(i)

        tasks = [asyncio.create_task(one(i)) for i in range(6)]
        for _ in range(300):  # bounded: until every instance runs one and the rest wait
            if version.pending() == 6 - count:
                break
            await asyncio.sleep(0.005)
        assert version.pending() == 6 - count
        assert version.scheduler.pending() == in_scheduler
        await asyncio.gather(*tasks)
        assert version.pending() == 0
        if count == 1:
            assert finished == list(range(6))


@pytest.mark.parametrize(
    ("allowed", "count", "batching", "expected"),
    [(1, 1, False, 1), (4, 1, False, 4), (4, 2, False, 2), (4, 1, True, 1)],
)
async def test_overlapping_async_batches(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    allowed: int,
    count: int,
    batching: bool,
    expected: int,
) -> None:
    """An ``async def execute`` runs for up to ``overlapping_batches`` batches at once on one
    instance: only for unbatched requests, and at most two with several instances."""
    config = kt_config(
        "overlap",
        count=count,
        max_batch_size=8 if batching else 0,
        dims="[ 4 ]",
        extra="dynamic_batching { max_queue_delay_microseconds: 0 }" if batching else "",
        parameters={"overlapping_batches": str(allowed), "sleep_ms": "50"},
    )
    add_model(repo, "overlap", config)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        shape = (1, 4) if batching else (4,)
        a = np.ones(shape, np.float32)
        results = await asyncio.gather(
            *(
                srv.server.infer_once(InferenceRequest("overlap", {"INPUT0": a, "INPUT1": a}))
                for _ in range(8)
            )
        )
        assert all(r.error is None for r in results)
        most = max(int(r.outputs["OUTPUT1"].max()) for r in results)
        assert most == expected  # per instance


@pytest.mark.parametrize("allowed", [1, 4])
async def test_submit_feeds_an_instance_without_a_task_per_batch(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str], allowed: int
) -> None:
    """An instance that implements ``ModelInstance.submit`` gets up to ``overlapping_batches``
    batches at once through it; each is answered and counted from its future's callback."""
    parameters = {"overlapping_batches": str(allowed), "sleep_ms": "30"}
    add_model(repo, "submit", kt_config("submit", parameters=parameters))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        a = np.ones((1, 4), np.float32)
        results = await asyncio.gather(
            *(
                srv.server.infer_once(InferenceRequest("submit", {"INPUT0": a, "INPUT1": a}))
                for _ in range(8)
            )
        )
        assert all(r.error is None for r in results)
        assert max(int(r.outputs["OUTPUT1"].max()) for r in results) == allowed
        stats = srv.server.model_statistics("submit")[0]
        for _ in range(100):  # recorded just after the answers go out
            if stats.execution_count == 8:
                break
            await asyncio.sleep(0.01)
        assert stats.execution_count == 8


async def test_submitted_batches_fail_when_the_model_unloads(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    """Batches still out through ``submit`` when the drain times out get UNAVAILABLE."""
    parameters = {"overlapping_batches": "4", "sleep_ms": "5000"}
    add_model(repo, "submit", kt_config("submit", parameters=parameters))
    a = np.ones((1, 4), np.float32)
    async with run_server(repo, exit_timeout_secs=0.2, **NO_ENDPOINTS) as srv:
        tasks = [
            asyncio.create_task(
                srv.server.infer_once(InferenceRequest("submit", {"INPUT0": a, "INPUT1": a}))
            )
            for _ in range(3)
        ]
        await asyncio.sleep(0.1)
    results = await asyncio.gather(*tasks)
    assert all(r.error is not None and r.error.status is Status.UNAVAILABLE for r in results)


async def test_reported_time_splits_stay_with_their_batch(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    """Batches handed to the thread ahead run back to back; each keeps the split it reported."""
    add_model(repo, "timed", kt_config("timed", parameters={"sleep_ms": "20"}))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        stats = await _infer_concurrently(srv, "timed", 6)
        assert stats.compute_input.ns == 6 * 1_000
        assert stats.compute_infer.ns == 6 * 2_000
        assert stats.compute_output.ns == 6 * 3_000


async def test_kind_gpu_without_gpu_fails_the_model_clearly(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "gpu", kt_config(kind="KIND_GPU"))
    add_model(repo, "cpu", kt_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        rows = {r.name: r for r in srv.server.repository_index()}
        assert rows["gpu"].state == "UNAVAILABLE"
        assert "asks for KIND_GPU, but no GPU is usable" in rows["gpu"].reason
        assert rows["cpu"].state == "READY"


@pytest.mark.parametrize("backend", ["kerneltest", "kerneltest_parallel"])
async def test_failed_instance_finalizes_what_was_initialized(
    repo: Path,
    tmp_path: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    backend: str,
) -> None:
    log = tmp_path / "events.log"
    add_model(
        repo, "bad", kt_config(backend=backend, count=2, parameters={"fail_instance_init": "1"})
    )
    async with run_server(repo, **_options(log, backend)) as srv:
        row = srv.server.repository_index()[0]
        assert row.state == "UNAVAILABLE"
        assert "refuses to initialize" in row.reason
    events = log.read_text().splitlines()
    assert "model.initialize bad 1" in events
    assert "model.finalize bad 1" in events
    assert not any(e.startswith("instance.initialize") for e in events)
