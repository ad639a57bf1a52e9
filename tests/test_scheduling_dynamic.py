"""The dynamic batcher: Triton's batching rules, priorities, queue policies and ordering.

Every model here is the ``kerneltest`` ``echo_id`` behaviour: it concatenates the batch as a real
backend does and answers each request its own rows plus an ECHO row naming the request and the
batch it ran in, so the tests can see how requests were batched.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from kernel import InferenceRequest, KernelError, Status
from kernel._inference import InferenceResponse
from kernel._scheduling import DynamicBatcher
from kernel.testing import RunningServer, ServerThread, run_server, write_model

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def echo_config(
    dynamic: str = "",
    *,
    max_batch_size: int = 8,
    count: int = 1,
    ragged: bool = False,
) -> str:
    ragged_text = "allow_ragged_batch: true" if ragged else ""
    return f"""
backend: "kerneltest"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] {ragged_text} }} ]
output [
  {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "ECHO" data_type: TYPE_STRING dims: [ 1 ] }}
]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
parameters {{ key: "behaviour" value {{ string_value: "echo_id" }} }}
dynamic_batching {{ {dynamic} }}
"""


def request(
    rid: str, *, rows: int = 1, width: int = 2, value: float = 0.0, **kwargs: Any
) -> InferenceRequest:
    sleep_ms = kwargs.pop("sleep_ms", 0)
    return InferenceRequest(
        "m",
        {"INPUT0": np.full((rows, width), value, np.float32)},
        id=rid,
        parameters={"sleep_ms": sleep_ms} if sleep_ms else None,
        **kwargs,
    )


def echo(response: InferenceResponse) -> dict[str, Any]:
    assert response.error is None, response.error
    result: dict[str, Any] = json.loads(response.outputs["ECHO"].reshape(-1)[0])
    return result


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a state of the server the test needs before going on."""
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.005)
    raise AssertionError("condition not reached")


async def run_all(
    srv: RunningServer, requests: list[InferenceRequest]
) -> tuple[dict[str, InferenceResponse | KernelError], list[str]]:
    """Send ``requests`` concurrently (admitted in list order); answers and completion order."""
    answers: dict[str, InferenceResponse | KernelError] = {}
    order: list[str] = []

    async def one(r: InferenceRequest) -> None:
        try:
            answers[r.id] = await srv.server.infer_once(r)
        except KernelError as exc:
            answers[r.id] = exc
        order.append(r.id)

    async with anyio.create_task_group() as tg:
        for r in requests:
            tg.start_soon(one, r)
    return answers, order


async def start_blocker(srv: RunningServer, tg: Any, sleep_ms: int = 300) -> list[str]:
    """Occupy the model's only instance; returns the list its id is appended to when done."""
    done: list[str] = []

    async def block() -> None:
        response = await srv.server.infer_once(request("blocker", sleep_ms=sleep_ms))
        assert response.error is None
        done.append("blocker")

    tg.start_soon(block)
    version = srv.server.route("m")
    await until(lambda: version.executing == 1)
    return done


async def test_batch_reaches_preferred_size(repo: Path) -> None:
    # A long queue delay: the batch goes because it reached the preferred size.
    write_model(
        repo, "m", echo_config("preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 5000000")
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers, _ = await run_all(srv, [request(f"r{i}", value=i) for i in range(4)])
        for i in range(4):
            response = answers[f"r{i}"]
            assert isinstance(response, InferenceResponse)
            info = echo(response)
            assert info["id"] == f"r{i}"
            assert info["batch_rows"] == 4
            assert sorted(info["batch_ids"]) == ["r0", "r1", "r2", "r3"]
            assert np.array_equal(response.outputs["OUTPUT0"], np.full((1, 2), i, np.float32))
        # Statistics are recorded once execute returned, which may be after the answers.
        stats = srv.server.model_statistics("m")[0]
        await until(lambda: stats.execution_count == 1)
        assert set(stats.batch_stats) == {4}
        assert stats.inference_count == 4


async def test_queue_delay_sends_a_smaller_batch(repo: Path) -> None:
    write_model(
        repo, "m", echo_config("preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 50000")
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers, _ = await run_all(srv, [request("a"), request("b")])
        infos = [echo(r) for r in answers.values() if isinstance(r, InferenceResponse)]
        assert [i["batch_rows"] for i in infos] == [2, 2]
        stats = srv.server.model_statistics("m")[0]
        await until(lambda: stats.execution_count == 1)
        assert set(stats.batch_stats) == {2}


async def test_batch_never_exceeds_max_batch_size(repo: Path) -> None:
    write_model(repo, "m", echo_config("max_queue_delay_microseconds: 100000", max_batch_size=4))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        sizes = [3, 3, 2, 1, 4, 1]
        answers, _ = await run_all(
            srv, [request(f"r{i}", rows=n, value=i) for i, n in enumerate(sizes)]
        )
        for i, n in enumerate(sizes):
            response = answers[f"r{i}"]
            assert isinstance(response, InferenceResponse)
            assert response.outputs["OUTPUT0"].shape == (n, 2)
            assert (response.outputs["OUTPUT0"] == i).all()
            assert all(json.loads(row)["id"] == f"r{i}" for row in response.outputs["ECHO"][:, 0])
            assert echo(response)["batch_rows"] <= 4
        stats = srv.server.model_statistics("m")[0]
        await until(lambda: stats.inference_count == sum(sizes))
        assert max(stats.batch_stats) <= 4


async def test_requests_of_different_shapes_are_not_batched(repo: Path) -> None:
    write_model(repo, "m", echo_config("max_queue_delay_microseconds: 100000"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        widths = {"a": 2, "b": 3, "c": 2, "d": 3}
        answers, _ = await run_all(srv, [request(k, width=w) for k, w in widths.items()])
        for rid, response in answers.items():
            assert isinstance(response, InferenceResponse)
            peers = echo(response)["batch_ids"]
            assert {widths[p] for p in peers} == {widths[rid]}
            assert response.outputs["OUTPUT0"].shape == (1, widths[rid])


async def test_ragged_inputs_batch_together(repo: Path) -> None:
    write_model(
        repo,
        "m",
        echo_config(
            "preferred_batch_size: [ 3 ] max_queue_delay_microseconds: 5000000", ragged=True
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        widths = {"a": 1, "b": 3, "c": 2}
        answers, _ = await run_all(srv, [request(k, width=w, value=w) for k, w in widths.items()])
        for rid, response in answers.items():
            assert isinstance(response, InferenceResponse)
            assert sorted(echo(response)["batch_ids"]) == ["a", "b", "c"]
            assert np.array_equal(
                response.outputs["OUTPUT0"], np.full((1, widths[rid]), widths[rid], np.float32)
            )


async def test_preserve_ordering_releases_responses_in_request_order(repo: Path) -> None:
    # Two instances, one batch per request: the first request runs long on one instance while
    # the second finishes first on the other, yet the clients hear back in request order.
    write_model(
        repo,
        "m",
        echo_config("preserve_ordering: true", max_batch_size=1, count=2),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        requests = [request("slow", sleep_ms=300), request("fast"), request("fast2")]
        answers, order = await run_all(srv, requests)
        assert order == ["slow", "fast", "fast2"]
        assert all(isinstance(a, InferenceResponse) and a.error is None for a in answers.values())


async def test_higher_priority_requests_run_first(repo: Path) -> None:
    write_model(
        repo,
        "m",
        echo_config("priority_levels: 2 default_priority_level: 2", max_batch_size=1),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv, anyio.create_task_group() as tg:
        done = await start_blocker(srv, tg)
        answers, order = await run_all(
            srv,
            [
                request("low1"),  # priority 0: the default level (2)
                request("low2", priority=2),
                request("high", priority=1),
                request("beyond", priority=7),  # past the levels: the default level too
            ],
        )
        assert done == ["blocker"]
        assert order == ["high", "low1", "low2", "beyond"]
        assert all(isinstance(a, InferenceResponse) for a in answers.values())


async def test_max_queue_size_refuses_with_triton_message(repo: Path) -> None:
    write_model(
        repo, "m", echo_config("default_queue_policy { max_queue_size: 2 }", max_batch_size=1)
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv, anyio.create_task_group() as tg:
        await start_blocker(srv, tg)
        answers, _ = await run_all(srv, [request("a"), request("b"), request("c")])
        refused = answers["c"]
        assert isinstance(refused, KernelError)
        assert refused.status is Status.UNAVAILABLE
        assert refused.message == "[request id: c] Exceeds maximum queue size"
        assert isinstance(answers["a"], InferenceResponse)
        assert isinstance(answers["b"], InferenceResponse)
        stats = srv.server.model_statistics("m")[0]
        assert stats.failures["REJECTED"] == 1


async def test_timed_out_request_is_rejected(repo: Path) -> None:
    write_model(
        repo,
        "m",
        echo_config(
            "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 50000 }"
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv, anyio.create_task_group() as tg:
        await start_blocker(srv, tg)  # runs longer than the queue timeout
        answers, _ = await run_all(srv, [request("late")])
        response = answers["late"]
        assert isinstance(response, InferenceResponse)
        assert response.error is not None
        assert response.error.status is Status.UNAVAILABLE
        assert response.error.message == "Request timeout expired"


async def test_request_timeout_overrides_the_default(repo: Path) -> None:
    write_model(repo, "m", echo_config("default_queue_policy { allow_timeout_override: true }"))
    async with run_server(repo, **NO_ENDPOINTS) as srv, anyio.create_task_group() as tg:
        await start_blocker(srv, tg)
        answers, _ = await run_all(srv, [request("patient"), request("hasty", timeout_us=50_000)])
        hasty, patient = answers["hasty"], answers["patient"]
        assert isinstance(hasty, InferenceResponse) and hasty.error is not None
        assert hasty.error.message == "Request timeout expired"
        assert isinstance(patient, InferenceResponse) and patient.error is None


async def test_timeout_ignored_without_override(repo: Path) -> None:
    write_model(repo, "m", echo_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv, anyio.create_task_group() as tg:
        await start_blocker(srv, tg)
        answers, _ = await run_all(srv, [request("hasty", timeout_us=1)])
        response = answers["hasty"]
        assert isinstance(response, InferenceResponse) and response.error is None


async def test_delayed_request_runs_after_the_others(repo: Path) -> None:
    # "early" times out while the instance is busy and is delayed behind "later", which is
    # still within its timeout when the instance frees up.
    write_model(
        repo,
        "m",
        echo_config(
            "default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 300000 }",
            max_batch_size=1,
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv, anyio.create_task_group() as tg:
        await start_blocker(srv, tg, sleep_ms=1000)
        order: list[str] = []

        async def send(rid: str) -> None:
            response = await srv.server.infer_once(request(rid))
            assert response.error is None
            order.append(rid)

        async with anyio.create_task_group() as clients:
            clients.start_soon(send, "early")
            await anyio.sleep(0.8)
            clients.start_soon(send, "later")
        assert order == ["later", "early"]


async def test_unload_answers_every_queued_request(repo: Path) -> None:
    write_model(repo, "m", echo_config(max_batch_size=1))
    async with run_server(repo, exit_timeout_secs=0.05, **NO_ENDPOINTS) as srv:
        answers: dict[str, InferenceResponse | KernelError] = {}

        async def send(r: InferenceRequest) -> None:
            try:
                answers[r.id] = await srv.server.infer_once(r)
            except KernelError as exc:
                answers[r.id] = exc

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(send, request(f"r{i}", sleep_ms=100))
            await until(lambda: srv.server.route("m").executing == 1)
            await srv.server.manager.unload("m")
        assert set(answers) == {f"r{i}" for i in range(5)}
        failed = [a for a in answers.values() if isinstance(a, InferenceResponse) and a.error]
        assert failed, "the short drain timeout leaves queued requests to fail"
        assert all(a.error.status is Status.UNAVAILABLE for a in failed if a.error)


@pytest.mark.parametrize(
    ("dynamic", "message"),
    [
        ("priority_levels: 2 default_priority_level: 3", "default_priority_level must be in"),
        ("priority_levels: 2", "default_priority_level must be in"),
    ],
)
async def test_invalid_priority_settings_fail_the_load(
    repo: Path, dynamic: str, message: str
) -> None:
    write_model(repo, "m", echo_config(dynamic))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        (row,) = [r for r in srv.server.repository_index() if r.name == "m"]
        assert row.state == "UNAVAILABLE"
        assert message in row.reason


def test_batcher_is_selected_by_the_config(repo: Path) -> None:
    from kernel._config_text import parse_model_config
    from kernel._scheduling import scheduler_for

    config = parse_model_config('name: "m" max_batch_size: 4 dynamic_batching { }', "x")
    assert isinstance(scheduler_for(config), DynamicBatcher)


def test_tritonclient_grpc_requests_are_batched(repo: Path) -> None:
    import tritonclient.grpc as grpcclient

    write_model(
        repo, "m", echo_config("preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 5000000")
    )
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        for i in range(4):
            tensor = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
            tensor.set_data_from_numpy(np.full((1, 2), i, np.float32))
            client.async_infer(
                "m", [tensor], lambda result, error: answers.put((result, error)), request_id=str(i)
            )
        for _ in range(4):
            result, error = answers.get(timeout=30)
            assert error is None
            info = json.loads(result.as_numpy("ECHO")[0, 0])
            assert info["batch_rows"] == 4
            assert (result.as_numpy("OUTPUT0") == int(info["id"])).all()
        for _ in range(500):  # statistics are recorded once execute returned
            stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]
            if stats.get("execution_count") == "1":
                break
            time.sleep(0.01)
        assert [b["batch_size"] for b in stats["batch_stats"]] == ["4"]
        client.close()
