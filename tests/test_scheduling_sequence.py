"""The sequence batcher: correlation ids, control inputs, implicit state, both strategies.

The model is the ``kerneltest`` ``sequence_accumulate`` behaviour: OUTPUT is the running sum of
a sequence's INPUT values, kept in the implicit state ACC, and ECHO reports the control inputs
the model got and the correlation ids of the batch it ran in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from kernel import InferenceRequest, KernelError, RequestFlags, Status
from kernel._config_text import parse_model_config
from kernel._inference import InferenceResponse
from kernel._scheduling import SequenceBatcher, scheduler_for
from kernel._scheduling._sequence_tensors import SequenceTensors
from kernel.testing import RunningServer, ServerThread, run_server, write_model

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}
START, END = RequestFlags.SEQUENCE_START, RequestFlags.SEQUENCE_END


def sequence_config(
    strategy: str = "direct { }",
    *,
    max_batch_size: int = 4,
    count: int = 1,
    corrid_type: str = "TYPE_UINT64",
    idle_us: int = 5_000_000,
    initial: str = "",
    extra_outputs: str = "",
) -> str:
    return f"""
backend: "kerneltest"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "ECHO" data_type: TYPE_STRING dims: [ 1 ] }}
  {extra_outputs}
]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
parameters {{ key: "behaviour" value {{ string_value: "sequence_accumulate" }} }}
sequence_batching {{
  {strategy}
  max_sequence_idle_microseconds: {idle_us}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [
      {{ kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid_type} }} ] }}
  ]
  state [ {{
    input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] {initial}
  }} ]
}}
"""


def step(
    corrid: int | str, value: int, flags: RequestFlags = RequestFlags.NONE, **kw: Any
) -> InferenceRequest:
    return InferenceRequest(
        "s",
        {"INPUT": np.array([[value]], np.int32)},
        correlation_id=corrid,
        flags=flags,
        id=f"{corrid}:{value}",
        **kw,
    )


def total(response: InferenceResponse) -> int:
    assert response.error is None, response.error
    return int(response.outputs["OUTPUT"].reshape(-1)[0])


def echo(response: InferenceResponse) -> dict[str, Any]:
    assert response.error is None, response.error
    result: dict[str, Any] = json.loads(response.outputs["ECHO"].reshape(-1)[0])
    return result


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.005)
    raise AssertionError("condition not reached")


async def send_all(
    srv: RunningServer, requests: list[InferenceRequest]
) -> dict[str, InferenceResponse]:
    """Send ``requests`` concurrently, admitted in list order (a client pipelining them)."""
    answers: dict[str, InferenceResponse] = {}

    async def one(r: InferenceRequest) -> None:
        answers[r.id] = await srv.server.infer_once(r)

    async with anyio.create_task_group() as tg:
        for r in requests:
            tg.start_soon(one, r)
    return answers


async def test_state_and_controls_follow_each_sequence(repo: Path) -> None:
    write_model(repo, "s", sequence_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers = await send_all(
            srv,
            [
                step(1, 1, START),
                step(2, 10, START),
                step(1, 2),
                step(2, 20),
                step(1, 3, END),
                step(2, 30, END),
            ],
        )
        assert [total(answers[f"1:{v}"]) for v in (1, 2, 3)] == [1, 3, 6]
        assert [total(answers[f"2:{v}"]) for v in (10, 20, 30)] == [10, 30, 60]
        first, middle, last = (echo(answers[f"1:{v}"]) for v in (1, 2, 3))
        assert (first["start"], first["end"], first["ready"]) == (1.0, 0, True)
        assert (middle["start"], middle["end"]) == (0.0, 0)
        assert (last["start"], last["end"]) == (0.0, 1)
        assert {first["corrid"], middle["corrid"], last["corrid"]} == {1}
        # The state output is not declared, so clients do not see it.
        assert "ACC_OUT" not in answers["1:1"].outputs


async def test_a_declared_state_output_reaches_the_client(repo: Path) -> None:
    extra = ', { name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] }'
    write_model(repo, "s", sequence_config(extra_outputs=extra))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers = await send_all(srv, [step(5, 4, START), step(5, 5, END)])
        assert int(answers["5:5"].outputs["ACC_OUT"].reshape(-1)[0]) == 9


async def test_restart_resets_the_state(repo: Path) -> None:
    write_model(repo, "s", sequence_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers = await send_all(srv, [step(3, 1, START), step(3, 2), step(3, 7, START)])
        assert total(answers["3:7"]) == 7


@pytest.mark.parametrize("strategy", ["direct { }", "oldest { max_candidate_sequences: 4 }"])
async def test_request_without_correlation_id_is_refused(repo: Path, strategy: str) -> None:
    write_model(repo, "s", sequence_config(strategy))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        for corrid in (0, ""):
            with pytest.raises(KernelError) as caught:
                await srv.server.infer_once(step(corrid, 1, START))
            assert caught.value.status is Status.INVALID_ARG
            assert caught.value.message == (
                "inference request to model 's' must specify a non-zero or non-empty correlation ID"
            )


async def test_unknown_and_ended_sequences_are_refused(repo: Path) -> None:
    write_model(repo, "s", sequence_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        message = (
            "inference request for sequence {} to model 's' must specify the START flag on the"
            " first request of the sequence"
        )
        with pytest.raises(KernelError) as caught:
            await srv.server.infer_once(step(9, 1))
        assert caught.value.status is Status.INVALID_ARG
        assert caught.value.message == message.format(9)
        assert total(await srv.server.infer_once(step(9, 1, START | END))) == 1
        with pytest.raises(KernelError) as caught:
            await srv.server.infer_once(step(9, 2))
        assert caught.value.message == message.format(9)
        with pytest.raises(KernelError) as caught:
            await srv.server.infer_once(step("abc", 2))
        assert caught.value.message == message.format("abc")


async def test_idle_sequence_is_released(repo: Path) -> None:
    write_model(repo, "s", sequence_config(idle_us=50_000))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert total(await srv.server.infer_once(step(4, 1, START))) == 1
        await anyio.sleep(0.2)  # longer than max_sequence_idle_microseconds
        with pytest.raises(KernelError, match="must specify the START flag"):
            await srv.server.infer_once(step(4, 2))


async def test_an_idle_sequence_gives_its_slot_to_the_backlog(repo: Path) -> None:
    write_model(repo, "s", sequence_config(max_batch_size=1, count=1, idle_us=50_000))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert total(await srv.server.infer_once(step(1, 1, START))) == 1  # never ends
        with anyio.fail_after(20):
            waiting = await srv.server.infer_once(step(2, 5, START))
        assert total(waiting) == 5
        with pytest.raises(KernelError, match="must specify the START flag"):
            await srv.server.infer_once(step(1, 2))


async def test_sequence_requests_need_batch_size_one(repo: Path) -> None:
    write_model(repo, "s", sequence_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        request = InferenceRequest(
            "s", {"INPUT": np.zeros((2, 1), np.int32)}, correlation_id=1, flags=START
        )
        with pytest.raises(KernelError) as caught:
            await srv.server.infer_once(request)
        assert caught.value.message == (
            "inference request to model 's' must specify batch-size 1 due to requirements of"
            " sequence batcher"
        )


async def test_string_correlation_ids(repo: Path) -> None:
    write_model(repo, "s", sequence_config(corrid_type="TYPE_STRING"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers = await send_all(srv, [step("alpha", 1, START), step("alpha", 2, END)])
        assert total(answers["alpha:2"]) == 3
        assert echo(answers["alpha:2"])["corrid"] == "alpha"
        numeric = await srv.server.infer_once(step(77, 1, START | END))
        assert echo(numeric)["corrid"] == "77"


async def test_large_unsigned_correlation_id(repo: Path) -> None:
    write_model(repo, "s", sequence_config(corrid_type="TYPE_UINT64"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        corrid = 2**63 + 5
        response = await srv.server.infer_once(step(corrid, 1, START | END))
        assert echo(response)["corrid"] == corrid


async def test_string_id_for_a_numeric_corrid_is_refused(repo: Path) -> None:
    write_model(repo, "s", sequence_config(corrid_type="TYPE_INT64"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        with pytest.raises(KernelError) as caught:
            await srv.server.infer_once(step("abc", 1, START))
        assert caught.value.status is Status.INVALID_ARG


async def test_initial_state_from_a_data_file(repo: Path) -> None:
    initial = 'initial_state { data_type: TYPE_INT32 dims: [ 1 ] data_file: "acc" name: "start" }'
    model_dir = write_model(repo, "s", sequence_config(initial=initial))
    (model_dir / "initial_state").mkdir()
    np.array([100], np.int32).tofile(model_dir / "initial_state" / "acc")
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers = await send_all(srv, [step(1, 1, START), step(1, 2, END)])
        assert [total(answers["1:1"]), total(answers["1:2"])] == [101, 103]


async def test_direct_pins_each_sequence_to_one_instance(repo: Path) -> None:
    write_model(repo, "s", sequence_config(max_batch_size=1, count=2))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        requests = [step(1, 1, START), step(2, 1, START)]
        requests += [step(c, v) for v in range(2, 6) for c in (1, 2)]
        answers = await send_all(srv, requests)
        instances = {
            c: {echo(answers[f"{c}:{v}"])["instance"] for v in range(1, 6)} for c in (1, 2)
        }
        assert len(instances[1]) == 1 and len(instances[2]) == 1
        assert instances[1] != instances[2]  # sequences spread over the instances
        assert total(answers["1:5"]) == total(answers["2:5"]) == 15


async def test_direct_batches_the_slots_of_an_instance(repo: Path) -> None:
    write_model(repo, "s", sequence_config(max_batch_size=2, count=1))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        answers = await send_all(
            srv, [step(c, v) if v > 1 else step(c, v, START) for v in (1, 2, 3) for c in (1, 2)]
        )
        for answer in answers.values():
            peers = echo(answer)["batch_corrids"]
            assert len(peers) == len(set(peers))  # never two requests of one sequence


async def test_sequences_beyond_the_slots_wait_in_the_backlog(repo: Path) -> None:
    write_model(repo, "s", sequence_config(max_batch_size=1, count=1))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        order: list[str] = []

        async def send(r: InferenceRequest) -> None:
            assert (await srv.server.infer_once(r)).error is None
            order.append(r.id)

        async with anyio.create_task_group() as tg:
            for r in [step(1, 1, START), step(2, 1, START), step(1, 2), step(1, 3, END)]:
                tg.start_soon(send, r)
        # Sequence 2 got the only slot once sequence 1 ended.
        assert order == ["1:1", "1:2", "1:3", "2:1"]


async def test_oldest_batches_across_sequences_one_request_each(repo: Path) -> None:
    strategy = (
        "oldest { max_candidate_sequences: 4 preferred_batch_size: [ 3 ]"
        " max_queue_delay_microseconds: 200000 }"
    )
    write_model(repo, "s", sequence_config(strategy, max_batch_size=4, count=2))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        requests = [step(c, 1, START) for c in (1, 2, 3)]
        requests += [step(c, v) for v in (2, 3, 4) for c in (1, 2, 3)]
        answers = await send_all(srv, requests)
        for c in (1, 2, 3):
            assert [total(answers[f"{c}:{v}"]) for v in (1, 2, 3, 4)] == [1, 3, 6, 10]
        for answer in answers.values():
            peers = echo(answer)["batch_corrids"]
            assert len(peers) == len(set(peers))
        stats = srv.server.model_statistics("s")[0]
        await until(lambda: stats.inference_count == 12)
        assert max(stats.batch_stats) > 1  # sequences did share batches


async def test_oldest_candidate_limit_keeps_later_sequences_waiting(repo: Path) -> None:
    strategy = "oldest { max_candidate_sequences: 1 }"
    write_model(repo, "s", sequence_config(strategy, max_batch_size=4, count=1))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        order: list[str] = []

        async def send(r: InferenceRequest) -> None:
            assert (await srv.server.infer_once(r)).error is None
            order.append(r.id)

        async with anyio.create_task_group() as tg:
            for r in [step(1, 1, START), step(2, 1, START), step(1, 2, END)]:
                tg.start_soon(send, r)
        assert order == ["1:1", "1:2", "2:1"]


async def test_oldest_preserve_ordering_with_waiting_sequences(repo: Path) -> None:
    # More sequences than candidate places, each client waiting for every answer: answers of
    # running sequences must not wait behind a sequence that waits for them to end.
    strategy = "oldest { max_candidate_sequences: 2 preserve_ordering: true }"
    write_model(repo, "s", sequence_config(strategy, max_batch_size=2, count=2))
    async with run_server(repo, **NO_ENDPOINTS) as srv:

        async def client(corrid: int) -> None:
            for value in (1, 2, 3):
                flags = START if value == 1 else END if value == 3 else RequestFlags.NONE
                response = await srv.server.infer_once(step(corrid, value, flags))
                assert total(response) == sum(range(1, value + 1))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for corrid in (1, 2, 3, 4):
                    tg.start_soon(client, corrid)


def test_control_tensors_are_shaped_as_triton_shapes_them() -> None:
    text = sequence_config(max_batch_size=4).replace('backend: "kerneltest"', 'name: "s"')
    tensors = SequenceTensors(parse_model_config(text, "x"), None)
    controls = tensors.controls(7, start=True, end=False)
    assert controls["START"].shape == (1, 1) and controls["START"].dtype == np.float32
    assert controls["START"][0, 0] == 1.0
    assert controls["END"].dtype == np.int32 and controls["END"][0, 0] == 0
    assert controls["READY"].dtype == np.bool_ and bool(controls["READY"][0, 0])
    assert controls["CORRID"].dtype == np.uint64 and controls["CORRID"][0, 0] == 7
    assert tensors.initial_state()["ACC_IN"].shape == (1, 1)
    unbatched = sequence_config(max_batch_size=0).replace('backend: "kerneltest"', 'name: "s"')
    flat = SequenceTensors(parse_model_config(unbatched, "x"), None)
    assert flat.controls(7, start=False, end=True)["END"].shape == (1,)
    assert flat.initial_state()["ACC_IN"].shape == (1,)


def test_sequence_batcher_is_selected_by_the_config() -> None:
    text = sequence_config().replace('backend: "kerneltest"', 'name: "s"')
    assert isinstance(scheduler_for(parse_model_config(text, "x")), SequenceBatcher)


def test_a_control_needs_two_values() -> None:
    text = 'name: "s" sequence_batching { control_input [ { name: "S" control [ { kind:'
    text += " CONTROL_SEQUENCE_START int32_false_true: [ 1 ] } ] } ] }"
    with pytest.raises(KernelError, match="two values"):
        scheduler_for(parse_model_config(text, "x"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_sequences_with_integer_and_string_ids(repo: Path, protocol: str) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    write_model(repo, "s", sequence_config(corrid_type="TYPE_STRING"))
    endpoints: dict[str, Any] = {"metrics_port": None}
    endpoints["http_port" if protocol == "grpc" else "grpc_port"] = None
    with ServerThread(repo, **endpoints) as srv:
        module: Any = grpcclient if protocol == "grpc" else httpclient
        client = module.InferenceServerClient(srv.grpc_url if protocol == "grpc" else srv.http_url)
        for corrid in (42, "abc"):
            for position, value in enumerate((1, 2, 3)):
                tensor = module.InferInput("INPUT", [1, 1], "INT32")
                tensor.set_data_from_numpy(np.array([[value]], np.int32))
                result = client.infer(
                    "s",
                    [tensor],
                    sequence_id=corrid,
                    sequence_start=position == 0,
                    sequence_end=position == 2,
                )
                assert int(result.as_numpy("OUTPUT")[0, 0]) == sum(range(1, value + 1))
                info = json.loads(result.as_numpy("ECHO")[0, 0])
                assert info["corrid"] == str(corrid)
        tensor = module.InferInput("INPUT", [1, 1], "INT32")
        tensor.set_data_from_numpy(np.array([[1]], np.int32))
        with pytest.raises(Exception, match="must specify the START flag"):
            client.infer("s", [tensor], sequence_id=42)
        client.close()


ITERATIVE = """
name: "it"
backend: "kerneltest"
max_batch_size: 2
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  iterative_sequence: true
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }
  ]
}
"""


async def test_iterative_sequence_executes_a_rescheduled_request_again() -> None:
    # Triton's iterative sequence: one request (no sequence id needed) is the whole sequence;
    # START on its first execution only; the backend reschedules it until its final response.
    batcher = scheduler_for(parse_model_config(ITERATIVE, "x"))
    assert isinstance(batcher, SequenceBatcher) and batcher.iterative
    request = InferenceRequest("it", {"INPUT": np.array([[1]], np.int32)})
    other = InferenceRequest("it", {"INPUT": np.array([[2]], np.int32)})
    batcher.enqueue(request)
    batcher.enqueue(other)
    with anyio.fail_after(5):
        first = await batcher.next_batch(0)
    assert first == [request, other]  # two sequences, two slots
    assert request.flags & START and request.inputs["START"].tolist() == [[1]]
    batcher.reschedule(request)
    assert batcher.pending() == 1
    other.respond({"OUTPUT": np.array([[2]], np.int32)})
    with anyio.fail_after(5):
        again = await batcher.next_batch(0)
    assert again == [request]
    assert not request.flags & START and request.inputs["START"].tolist() == [[0]]
    request.respond({"OUTPUT": np.array([[1]], np.int32)})
    assert batcher.pending() == 0
    with pytest.raises(KernelError, match="rescheduled a request it was not given"):
        batcher.reschedule(request)


def test_only_an_iterative_sequence_takes_a_request_back() -> None:
    plain = scheduler_for(
        parse_model_config(ITERATIVE.replace("iterative_sequence: true", ""), "x")
    )
    direct = scheduler_for(parse_model_config(ITERATIVE.split("sequence_batching")[0], "x"))
    for scheduler in (plain, direct):
        with pytest.raises(KernelError) as raised:
            scheduler.reschedule(InferenceRequest("it", {}))
        assert raised.value.status is Status.INTERNAL
        assert "not configured with iterative sequence batching" in raised.value.message
