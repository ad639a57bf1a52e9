"""Random interleavings through every scheduler: each request gets exactly its own answer.

One server (in a background thread) serves a model per scheduler setup; hypothesis drives random
mixes of batch sizes, shapes, priorities, timeouts, client delays and sequences at them. Every
model echoes, per row, which request it answered (``kerneltest`` ``echo_id`` and
``sequence_accumulate``), so a row handed to the wrong request shows. Checked for every example:
every request is answered (success or a proper error), successes carry only their own rows,
batches stay within ``max_batch_size``, ``preserve_ordering`` models answer in admission order,
sequences only ever see their own state, and an unload leaves nothing pending. The batching
rule alone is checked too: every batch it cuts fits ``max_batch_size`` and has one shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import InferenceRequest, KernelError, RequestFlags
from kernel._inference import InferenceResponse
from kernel.testing import RunningServer, ServerThread, write_model

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXAMPLE_TIMEOUT = 10.0

ECHO_IO = """
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "ECHO" data_type: TYPE_STRING dims: [ 1 ] }
]
"""


def echo_model(dynamic: str, *, max_batch_size: int, count: int) -> str:
    return f"""
backend: "kerneltest"
max_batch_size: {max_batch_size}
{ECHO_IO}
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
parameters {{ key: "behaviour" value {{ string_value: "echo_id" }} }}
dynamic_batching {{ {dynamic} }}
"""


def sequence_model(strategy: str, *, max_batch_size: int, count: int) -> str:
    return f"""
backend: "kerneltest"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "ECHO" data_type: TYPE_STRING dims: [ 1 ] }}
]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
parameters {{ key: "behaviour" value {{ string_value: "sequence_accumulate" }} }}
sequence_batching {{
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING }} ] }}
  ]
  state [ {{ input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
}}
"""


QUEUES = """
priority_levels: 3 default_priority_level: 2
default_queue_policy { allow_timeout_override: true }
priority_queue_policy { key: 3 value {
  timeout_action: DELAY default_timeout_microseconds: 2000 allow_timeout_override: true } }
"""
DYNAMIC_MODELS = {
    "dyn": echo_model(
        f"preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 2000 {QUEUES}",
        max_batch_size=4,
        count=2,
    ),
    # One FIFO queue (no priorities, no timeouts): requests leave it in admission order, so
    # that is the order preserve_ordering must answer in.
    "dyn_ordered": echo_model(
        "preserve_ordering: true max_queue_delay_microseconds: 1000",
        max_batch_size=4,
        count=2,
    ),
    "dyn_limited": echo_model(
        "default_queue_policy { max_queue_size: 3 allow_timeout_override: true }",
        max_batch_size=2,
        count=1,
    ),
}
ORDERED = {"dyn_ordered"}
MAX_BATCH = {"dyn": 4, "dyn_ordered": 4, "dyn_limited": 2, "ens": 4, "dyn_unload": 4}
ENSEMBLE = f"""
platform: "ensemble"
max_batch_size: 4
{ECHO_IO}
ensemble_scheduling {{ step [ {{ model_name: "dyn" model_version: -1
  input_map {{ key: "INPUT0" value: "INPUT0" }}
  output_map {{ key: "OUTPUT0" value: "OUTPUT0" }}
  output_map {{ key: "ECHO" value: "ECHO" }} }} ] }}
"""
SEQUENCE_MODELS = {
    "seq_direct": sequence_model("direct { }", max_batch_size=2, count=2),
    "seq_oldest": sequence_model(
        "oldest { max_candidate_sequences: 3 preferred_batch_size: [ 2 ]"
        " max_queue_delay_microseconds: 1000 preserve_ordering: true }",
        max_batch_size=3,
        count=2,
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Any]]:
    repo = tmp_path_factory.mktemp("models")
    for name, config in {**DYNAMIC_MODELS, **SEQUENCE_MODELS}.items():
        write_model(repo, name, config)
    write_model(repo, "ens", ENSEMBLE)
    write_model(repo, "dyn_unload", DYNAMIC_MODELS["dyn"])
    write_model(repo, "seq_unload", SEQUENCE_MODELS["seq_oldest"])
    thread = ServerThread(
        repo, http_port=None, grpc_port=None, metrics_port=None, exit_timeout_secs=0.05
    )
    with thread as running:
        yield thread, running


# -- stateless requests ---------------------------------------------------------------------

request_specs = st.lists(
    st.fixed_dictionaries(
        {
            "rows": st.integers(1, 2),
            "width": st.sampled_from([1, 3]),
            "priority": st.integers(0, 4),
            "timeout_us": st.sampled_from([0, 0, 0, 1, 3000, 1_000_000]),
            "sleep_ms": st.sampled_from([0, 0, 1, 4]),
            "delay_ms": st.sampled_from([0, 0, 1, 2, 5]),
        }
    ),
    min_size=1,
    max_size=12,
)


async def run_requests(
    srv: RunningServer, model: str, specs: list[dict[str, Any]], *, unload: float | None = None
) -> tuple[list[str], list[str], dict[str, InferenceResponse | KernelError]]:
    """Send one request per spec; returns admission order, answer order and the answers."""
    admitted: list[str] = []
    answered: list[str] = []
    answers: dict[str, InferenceResponse | KernelError] = {}

    async def client(index: int, spec: dict[str, Any]) -> None:
        await anyio.sleep(spec["delay_ms"] / 1000)
        rid = f"q{index}"
        request = InferenceRequest(
            model,
            {"INPUT0": np.full((spec["rows"], spec["width"]), index, np.float32)},
            id=rid,
            priority=spec["priority"],
            timeout_us=spec["timeout_us"],
            parameters={"sleep_ms": spec["sleep_ms"]},
        )
        admitted.append(rid)  # infer_once admits synchronously, before its first await
        try:
            answers[rid] = await srv.server.infer_once(request)
        except KernelError as exc:
            admitted.remove(rid)
            answers[rid] = exc
            return
        answered.append(rid)

    with anyio.fail_after(EXAMPLE_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index, spec in enumerate(specs):
                tg.start_soon(client, index, spec)
            if unload is not None:
                await anyio.sleep(unload)
                await srv.server.manager.unload(model)
    return admitted, answered, answers


def check_own_rows(
    model: str, specs: list[dict[str, Any]], answers: dict[str, InferenceResponse | KernelError]
) -> None:
    assert set(answers) == {f"q{i}" for i in range(len(specs))}, "a request went unanswered"
    for index, spec in enumerate(specs):
        answer = answers[f"q{index}"]
        if isinstance(answer, KernelError):
            assert "Exceeds maximum queue size" in answer.message, answer
            continue
        if answer.error is not None:
            assert answer.error.message.endswith("Request timeout expired"), answer.error
            continue
        expected = np.full((spec["rows"], spec["width"]), index, np.float32)
        assert np.array_equal(answer.outputs["OUTPUT0"], expected), "rows of another request"
        rows = [json.loads(row) for row in answer.outputs["ECHO"][:, 0]]
        assert len(rows) == spec["rows"]
        for row in rows:
            assert row["id"] == f"q{index}"
            assert row["batch_rows"] <= MAX_BATCH[model]


@SETTINGS
@given(model=st.sampled_from([*DYNAMIC_MODELS, "ens"]), specs=request_specs)
def test_every_request_gets_exactly_its_own_answer(
    served: tuple[ServerThread, RunningServer], model: str, specs: list[dict[str, Any]]
) -> None:
    thread, srv = served
    admitted, answered, answers = thread.call(run_requests, srv, model, specs)
    check_own_rows(model, specs, answers)
    if model in ORDERED:
        assert answered == admitted, "preserve_ordering: answers out of admission order"


@SETTINGS
@given(specs=request_specs, after_ms=st.sampled_from([0, 1, 3, 10]))
def test_unload_leaves_nothing_pending(
    served: tuple[ServerThread, RunningServer], specs: list[dict[str, Any]], after_ms: int
) -> None:
    thread, srv = served
    version = srv.server.route("dyn_unload")

    async def scenario() -> dict[str, InferenceResponse | KernelError]:
        _, _, answers = await run_requests(srv, "dyn_unload", specs, unload=after_ms / 1000)
        await srv.server.manager.load("dyn_unload")
        return answers

    answers = thread.call(scenario)
    assert set(answers) == {f"q{i}" for i in range(len(specs))}
    assert version.finished.is_set() and version.scheduler.pending() == 0
    assert version.in_flight == 0
    for index, answer in answers.items():
        if isinstance(answer, InferenceResponse) and answer.error is None:
            rows = [json.loads(row) for row in answer.outputs["ECHO"][:, 0]]
            assert {row["id"] for row in rows} == {index}


# -- sequences ------------------------------------------------------------------------------

sequence_specs = st.lists(
    st.fixed_dictionaries(
        {
            "values": st.lists(st.integers(-50, 50), min_size=1, max_size=5),
            "pipelined": st.booleans(),
            "string_id": st.booleans(),
            "delay_ms": st.sampled_from([0, 0, 1, 3]),
        }
    ),
    min_size=1,
    max_size=6,
)


async def run_sequences(
    srv: RunningServer, model: str, specs: list[dict[str, Any]], *, unload: float | None = None
) -> dict[tuple[int, int], InferenceResponse | KernelError]:
    """Each spec is a client sending one sequence, waiting for each answer or pipelining."""
    answers: dict[tuple[int, int], InferenceResponse | KernelError] = {}

    async def send(key: tuple[int, int], request: InferenceRequest) -> None:
        try:
            answers[key] = await srv.server.infer_once(request)
        except KernelError as exc:
            answers[key] = exc

    async def client(index: int, spec: dict[str, Any]) -> None:
        await anyio.sleep(spec["delay_ms"] / 1000)
        corrid: int | str = f"s{index}" if spec["string_id"] else 1000 + index
        values = spec["values"]
        async with anyio.create_task_group() as tg:
            for position, value in enumerate(values):
                flags = RequestFlags.NONE
                if position == 0:
                    flags |= RequestFlags.SEQUENCE_START
                if position == len(values) - 1:
                    flags |= RequestFlags.SEQUENCE_END
                request = InferenceRequest(
                    model,
                    {"INPUT": np.array([[value]], np.int32)},
                    correlation_id=corrid,
                    flags=flags,
                )
                if spec["pipelined"]:
                    tg.start_soon(send, (index, position), request)
                    await anyio.lowlevel.checkpoint()  # admitted in order, before the next one
                else:
                    await send((index, position), request)

    with anyio.fail_after(EXAMPLE_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index, spec in enumerate(specs):
                tg.start_soon(client, index, spec)
            if unload is not None:
                await anyio.sleep(unload)
                await srv.server.manager.unload(model)
    return answers


@SETTINGS
@given(model=st.sampled_from(list(SEQUENCE_MODELS)), specs=sequence_specs)
def test_sequences_only_see_their_own_state(
    served: tuple[ServerThread, RunningServer], model: str, specs: list[dict[str, Any]]
) -> None:
    thread, srv = served
    answers = thread.call(run_sequences, srv, model, specs)
    for index, spec in enumerate(specs):
        corrid = f"s{index}" if spec["string_id"] else str(1000 + index)
        running = 0
        instances = set()
        for position, value in enumerate(spec["values"]):
            answer = answers[(index, position)]
            assert isinstance(answer, InferenceResponse) and answer.error is None, answer
            running += value
            assert int(answer.outputs["OUTPUT"].reshape(-1)[0]) == running
            info = json.loads(answer.outputs["ECHO"].reshape(-1)[0])
            assert info["corrid"] == corrid
            assert info["start"] == (position == 0)
            assert info["end"] == (position == len(spec["values"]) - 1)
            assert len(info["batch_corrids"]) == len(set(info["batch_corrids"]))
            instances.add(info["instance"])
        if model == "seq_direct":
            assert len(instances) == 1, "a direct sequence moved between instances"


@SETTINGS
@given(specs=sequence_specs, after_ms=st.sampled_from([0, 1, 3, 10]))
def test_unloading_a_sequence_model_answers_everything(
    served: tuple[ServerThread, RunningServer], specs: list[dict[str, Any]], after_ms: int
) -> None:
    thread, srv = served
    version = srv.server.route("seq_unload")

    async def scenario() -> dict[tuple[int, int], InferenceResponse | KernelError]:
        answers = await run_sequences(srv, "seq_unload", specs, unload=after_ms / 1000)
        await srv.server.manager.load("seq_unload")
        return answers

    answers = thread.call(scenario)
    expected = {(i, p) for i, spec in enumerate(specs) for p in range(len(spec["values"]))}
    # Sequential clients stop at their first refused request; everything sent was answered.
    assert set(answers) <= expected
    for index, spec in enumerate(specs):
        sent = [p for p in range(len(spec["values"])) if (index, p) in answers]
        assert sent == list(range(len(sent)))
        assert sent, "the first request of every sequence is sent"
    assert version.finished.is_set() and version.scheduler.pending() == 0
    assert version.in_flight == 0


def test_fixture_serves_every_model(served: tuple[ServerThread, RunningServer]) -> None:
    _, srv = served
    ready = {row.name for row in srv.server.repository_index(ready_only=True)}
    assert ready >= {*DYNAMIC_MODELS, *SEQUENCE_MODELS, "ens", "dyn_unload", "seq_unload"}


# -- the batching rule alone ------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 4), st.sampled_from([1, 2])), min_size=1),
    preferred=st.sets(st.integers(1, 8), max_size=3),
    delay_us=st.sampled_from([0, 100, 10_000]),
    waited_us=st.integers(0, 20_000),
)
def test_batch_policy_cuts_valid_batches(
    sizes: list[tuple[int, int]], preferred: set[int], delay_us: int, waited_us: int
) -> None:
    from kernel._config_text import parse_model_config
    from kernel._scheduling._batch_policy import BatchPolicy

    config = parse_model_config(f'name: "m" max_batch_size: 8 {ECHO_IO}', "x")
    policy = BatchPolicy.from_config(config, preferred, delay_us)
    candidates = []
    for index, (rows, width) in enumerate(sizes):
        request = InferenceRequest("m", {"INPUT0": np.zeros((rows, width), np.float32)})
        request.batch_size = rows
        request.enqueued_ns = index
        candidates.append(request)
    now = waited_us * 1000
    count, wake = policy.decide(candidates, now)
    if count:
        batch = candidates[:count]
        assert wake is None
        assert sum(r.batch_size for r in batch) <= 8
        assert all(policy.compatible(batch[0], r) for r in batch)
    else:
        assert delay_us > 0 and wake is not None and wake > now
