"""A model version's admissions: the drain waits on an event (no polling), gives up at its
timeout, and every admitted request is settled exactly once, whatever its path through the
server (answered, failed by the model, cancelled while queued or executing, a stream closed
early, a decoupled stream)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from kernel import InferenceRequest
from kernel._admissions import Admissions
from kernel._errors import KernelError
from kernel.testing import run_server

NO_ENDPOINTS: dict[str, Any] = {"http_port": None, "grpc_port": None, "metrics_port": None}


def _request() -> InferenceRequest:
    return InferenceRequest("m", {})


async def _finishes(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` is done after the loop ran everything ready."""
    for _ in range(5):
        await asyncio.sleep(0)
    return task.done()


async def test_drained_returns_at_once_when_nothing_is_admitted() -> None:
    admissions = Admissions()
    with anyio.fail_after(5):
        await admissions.drained()
    assert admissions.idle


async def test_drained_waits_for_the_last_settlement_and_the_last_batch() -> None:
    admissions = Admissions()
    first, second = _request(), _request()
    admissions.admit(first)
    admissions.admit(second)
    admissions.executing += 1
    waiting = asyncio.ensure_future(admissions.drained())
    assert not await _finishes(waiting)
    admissions.settle(first)
    assert not await _finishes(waiting)
    admissions.settle(second)  # no request left, but a batch still executes
    assert not await _finishes(waiting)
    admissions.batch_ended()
    assert await _finishes(waiting)
    await waiting


async def test_drained_waits_for_requests_admitted_while_it_waits() -> None:
    admissions = Admissions()
    admissions.executing += 1
    waiting = asyncio.ensure_future(admissions.drained())
    assert not await _finishes(waiting)
    late = _request()
    admissions.admit(late)  # accepted while the version unloads: drained too
    admissions.batch_ended()
    assert not await _finishes(waiting)
    admissions.settle(late)
    assert await _finishes(waiting)


async def test_a_drain_that_times_out_leaves_the_counts_working() -> None:
    admissions = Admissions()
    request = _request()
    admissions.admit(request)
    with anyio.move_on_after(0.05) as scope:
        await admissions.drained()
    assert scope.cancelled_caught
    assert admissions.settle(request)  # no waiter left behind to set
    assert admissions.idle
    with anyio.fail_after(5):
        await admissions.drained()


def test_a_request_is_settled_once() -> None:
    admissions = Admissions()
    request, stranger = _request(), _request()
    admissions.admit(request)
    assert admissions.requests == 1
    assert admissions.settle(request)
    assert not admissions.settle(request)  # a second settlement changes nothing
    assert not admissions.settle(stranger)  # never admitted
    assert admissions.requests == 0


class _Recorded:
    """Counts, per request, the admissions and the settlements that took effect."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.admitted: Counter[int] = Counter()
        self.settled: Counter[int] = Counter()
        admit, settle = Admissions.admit, Admissions.settle

        def recording_admit(admissions: Admissions, request: InferenceRequest) -> None:
            self.admitted[id(request)] += 1
            admit(admissions, request)

        def recording_settle(admissions: Admissions, request: InferenceRequest) -> bool:
            settled = settle(admissions, request)
            if settled:
                self.settled[id(request)] += 1
            return settled

        monkeypatch.setattr(Admissions, "admit", recording_admit)
        monkeypatch.setattr(Admissions, "settle", recording_settle)


async def test_every_admitted_request_is_settled_exactly_once(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    repeat_config: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = _Recorded(monkeypatch)
    add_model(repo, "ok", kt_config("identity", max_batch_size=0))
    add_model(repo, "raises", kt_config("raise", max_batch_size=0))
    add_model(repo, "silent", kt_config("no_answer", max_batch_size=0))
    add_model(repo, "slow", kt_config("sleep", max_batch_size=0, parameters={"sleep_ms": "200"}))
    add_model(repo, "repeat", repeat_config)
    a = np.ones(4, np.float32)
    kept: list[InferenceRequest] = []  # alive to the end: their ids stay theirs

    def request(model: str, inputs: dict[str, Any] | None = None) -> InferenceRequest:
        made = InferenceRequest(model, inputs if inputs is not None else {"INPUT0": a, "INPUT1": a})
        kept.append(made)
        return made

    async with run_server(repo, **NO_ENDPOINTS) as srv:
        server = srv.server
        with anyio.fail_after(60):
            for model in ("ok", "raises", "silent"):  # answered, failed, left unanswered
                for _ in range(3):
                    await server.infer_once(request(model))
            with pytest.raises(KernelError):  # refused before admission: never counted
                await server.infer_once(request("ok", {"INPUT0": a}))
            # cancelled while executing, and while queued behind it
            tasks = [asyncio.ensure_future(server.infer_once(request("slow"))) for _ in range(3)]
            await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # a decoupled stream read to its end, and one closed after its first response
            values = np.arange(3, dtype=np.int32)
            full = [r async for r in server.infer(request("repeat", {"IN": values}))]
            assert full[-1].final
            stream = server.infer(request("repeat", {"IN": values}))
            assert not (await stream.__anext__()).final
            await stream.aclose()
            versions = [server.route(m) for m in ("ok", "raises", "silent", "slow", "repeat")]
            for version in versions:  # the slow model finishes its cancelled batch
                while version.executing:  # noqa: ASYNC110 - bounded by fail_after
                    await asyncio.sleep(0.01)
        assert len(recorded.admitted) == len(kept) - 1  # all but the refused one
        assert all(n == 1 for n in recorded.admitted.values())
        assert recorded.settled == recorded.admitted  # each admitted one settled once
        assert [v.in_flight for v in versions] == [0] * len(versions)
