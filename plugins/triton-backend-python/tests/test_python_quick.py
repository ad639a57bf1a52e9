"""When the server's loop waits a moment for a model process's answer (``_quick.py``), fed
decisions without a process, and the same through a served model."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from triton_backend_python import PythonBackend
from triton_backend_python._process import ModelProcess
from triton_backend_python._quick import LIMIT, STREAK, QuickAnswers

from kernel import KernelError
from kernel.testing import ServerThread


def _measured(average: float) -> QuickAnswers:
    quick = QuickAnswers()
    for _ in range(50):
        quick.answered(average)
    return quick


def test_waits_only_after_a_streak_of_lone_batches() -> None:
    quick = _measured(20e-6)
    budgets = [quick.budget(True) for _ in range(STREAK + 2)]
    assert budgets[:STREAK] == [0.0] * STREAK
    assert budgets[STREAK] == pytest.approx(40e-6, rel=0.05)
    assert budgets[STREAK + 1] == pytest.approx(40e-6, rel=0.05)


def test_a_batch_not_alone_restarts_the_streak() -> None:
    quick = _measured(20e-6)
    for _ in range(STREAK):
        quick.budget(True)
    assert quick.budget(True) > 0
    assert quick.budget(False) == 0.0
    assert [quick.budget(True) for _ in range(STREAK)] == [0.0] * STREAK
    assert quick.budget(True) > 0


def test_a_slow_model_is_never_waited_for() -> None:
    quick = _measured(2e-3)
    assert all(quick.budget(True) == 0.0 for _ in range(3 * STREAK))


def test_the_wait_is_capped() -> None:
    quick = _measured(0.9 * LIMIT)
    for _ in range(STREAK):
        quick.budget(True)
    assert quick.budget(True) == LIMIT


def test_unknown_round_trips_count_as_slow_until_measured() -> None:
    quick = QuickAnswers()
    assert all(quick.budget(True) == 0.0 for _ in range(3 * STREAK))


def test_a_model_that_became_slow_then_quick_again_is_noticed() -> None:
    quick = _measured(20e-6)
    for _ in range(20):
        quick.answered(1.0)  # a slow spell: clamped, so it does not take forever to forget
    for _ in range(STREAK + 1):
        assert quick.budget(True) == 0.0
    for _ in range(40):
        quick.answered(20e-6)
    assert quick.budget(True) > 0


def _served_sequentially(helpers: Any, served: Any, protocol: str = "grpc") -> ModelProcess:
    infer = helpers.grpc_infer if protocol == "grpc" else helpers.http_infer
    for step in range(4 * STREAK):
        a = np.full(4, step, dtype=np.float32)
        b = np.arange(4, dtype=np.float32)
        result = infer(served, "python_add_sub", {"INPUT0": a, "INPUT1": b})
        assert result.as_numpy("OUTPUT0").tolist() == (a + b).tolist()
        assert result.as_numpy("OUTPUT1").tolist() == (a - b).tolist()
    # type(), not isinstance(): some objects (torch proxies) warn when __class__ is read
    processes = [o for o in gc.get_objects() if type(o) is ModelProcess]
    live = [  # this server's (a stopped server's process objects may not be collected yet)
        p for p in processes if p.label.startswith("python_add_sub") and p._socket is not None
    ]
    assert len(live) == 1
    return live[0]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_one_client_in_sequence_gets_its_answers_while_the_loop_waits(
    tmp_path: Path, helpers: Any, protocol: str
) -> None:
    """Sequential requests to a model in its own process: after the streak the loop finds
    answers while it waits (no doorbell), and every answer is right. The cap is raised so that
    a loaded test machine, where a round trip takes longer than the default cap, still waits."""
    repository = helpers.make_repository(tmp_path / "models", ["python_add_sub"])
    config = {"python": {"answer-wait-us": "10000"}}
    with ServerThread(repository, backend_config=config) as served:
        process = _served_sequentially(helpers, served, protocol)
        # at most once per request after the streak; at least once (twice the recent round
        # trip is a long window for one request at a time)
        assert 1 <= process.quick_answers <= 3 * STREAK


def test_answer_wait_zero_never_waits(tmp_path: Path, helpers: Any) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_add_sub"])
    with ServerThread(repository, backend_config={"python": {"answer-wait-us": "0"}}) as served:
        assert _served_sequentially(helpers, served).quick_answers == 0


@pytest.mark.parametrize("value", ["-1", "10001", "1.5", "soon"])
def test_a_bad_answer_wait_is_refused(value: str) -> None:
    backend = PythonBackend()
    context = SimpleNamespace(config={"answer-wait-us": value})
    with pytest.raises(KernelError, match="answer-wait-us"):
        backend.initialize(context)  # type: ignore[arg-type]


def test_an_empty_handed_wait_pauses_waiting_longer_each_time() -> None:
    quick = _measured(20e-6)
    for _ in range(STREAK):
        quick.budget(True)
    pauses = []
    for _ in range(5):
        assert quick.budget(True) > 0
        quick.waited(False)
        skipped = 0
        while quick.budget(True) == 0.0:
            skipped += 1
            assert skipped < 5000
        pauses.append(skipped)
    assert pauses == [8, 16, 32, 64, 128]
    quick.waited(True)  # found: the next miss pauses briefly again
    assert quick.budget(True) > 0
    quick.waited(False)
    assert [quick.budget(True) for _ in range(8)] == [0.0] * 8
    assert quick.budget(True) > 0


def test_concurrent_clients_after_a_sequential_one_get_every_answer_once(
    tmp_path: Path, helpers: Any
) -> None:
    """A waiting loop meets requests that arrive meanwhile: each is answered, once, right."""
    repository = helpers.make_repository(tmp_path / "models", ["python_add_sub"])
    config = {"python": {"answer-wait-us": "10000"}}
    with ServerThread(repository, backend_config=config) as served:
        _served_sequentially(helpers, served)  # the loop now waits for lone batches

        def client(index: int) -> list[bool]:
            checks = []
            for step in range(STREAK):
                a = np.full(4, index * 100 + step, dtype=np.float32)
                b = np.arange(4, dtype=np.float32)
                infer = helpers.grpc_infer if index % 2 else helpers.http_infer
                result = infer(served, "python_add_sub", {"INPUT0": a, "INPUT1": b})
                checks.append(result.as_numpy("OUTPUT0").tolist() == (a + b).tolist())
            return checks

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(client, range(4)))
        assert all(all(checks) and len(checks) == STREAK for checks in results)


def test_traced_requests_keep_their_compute_timestamps(tmp_path: Path, helpers: Any) -> None:
    """With tracing on, a batch starts a loop turn after its admission (which sets the trace),
    so even an answer found while the loop waits gets Triton's compute timestamps."""
    repository = helpers.make_repository(tmp_path / "models", ["python_add_sub"])
    trace_file = tmp_path / "trace.json"
    settings = {"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]}
    config = {"python": {"answer-wait-us": "10000"}}
    with ServerThread(
        repository, backend_config=config, trace_file=trace_file, trace_settings=settings
    ) as served:
        _served_sequentially(helpers, served)
    text = trace_file.read_text()
    assert text.count('"REQUEST_START"') == 4 * STREAK
    assert text.count('"COMPUTE_START"') == 4 * STREAK
    assert text.count('"COMPUTE_END"') == 4 * STREAK
