"""Ensembles: dataflow between step models, loading what they need, streaming, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
from kernel_test_backends.configs import REPEAT

from kernel import InferenceRequest, KernelError, ModelControlMode
from kernel.testing import ServerThread, run_server, write_model

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def pair_model(behaviour: str, *, extra: str = "") -> str:
    """A ``kerneltest`` model INPUT0, INPUT1 -> OUTPUT0, OUTPUT1 (FP32 [4], batching)."""
    return f"""
backend: "kerneltest"
max_batch_size: 8
input [
  {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
output [
  {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
parameters {{ key: "behaviour" value {{ string_value: "{behaviour}" }} }}
{extra}
"""


ONE_INPUT_IDENTITY = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


def ensemble(steps: str, inputs: str, outputs: str, *, max_batch_size: int = 8) -> str:
    return f"""
platform: "ensemble"
max_batch_size: {max_batch_size}
input [ {inputs} ]
output [ {outputs} ]
ensemble_scheduling {{ step [ {steps} ] }}
"""


PAIR_IO = (
    '{ name: "A" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 4 ] }'
)
XY_IO = (
    '{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }'
)
ADD_THEN_IDENTITY = ensemble(
    """
    { model_name: "add" model_version: -1
      input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
      output_map { key: "OUTPUT0" value: "SUM" } output_map { key: "OUTPUT1" value: "DIFF" } },
    { model_name: "ident" model_version: -1
      input_map { key: "INPUT0" value: "SUM" } input_map { key: "INPUT1" value: "DIFF" }
      output_map { key: "OUTPUT0" value: "X" } output_map { key: "OUTPUT1" value: "Y" } }
    """,
    PAIR_IO,
    XY_IO,
)


def pair() -> dict[str, np.ndarray]:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    return {"A": a, "B": np.ones((2, 4), np.float32)}


def add_models(repo: Path) -> None:
    write_model(repo, "add", pair_model("addsub"))
    write_model(repo, "ident", pair_model("identity"))
    write_model(repo, "e", ADD_THEN_IDENTITY)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_steps_chain_through_the_ensemble(repo: Path) -> None:
    add_models(repo)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        inputs = pair()
        response = await srv.server.infer_once(InferenceRequest("e", inputs))
        assert response.error is None
        assert np.array_equal(response.outputs["X"], inputs["A"] + inputs["B"])
        assert np.array_equal(response.outputs["Y"], inputs["A"] - inputs["B"])
        only_x = await srv.server.infer_once(
            InferenceRequest("e", inputs, requested_output_names=["X"])
        )
        assert set(only_x.outputs) == {"X"}
        # Each step counts its own inference, the ensemble its own.
        for name in ("e", "add", "ident"):
            stats = srv.server.model_statistics(name)[0]
            await until(lambda: stats.success.count == 2)  # noqa: B023 - awaited right here


async def test_tensors_pass_between_steps_without_copies(repo: Path) -> None:
    write_model(repo, "ident", pair_model("identity"))
    write_model(
        repo,
        "e",
        ensemble(
            """
            { model_name: "ident" model_version: -1
              input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
              output_map { key: "OUTPUT0" value: "T0" } output_map { key: "OUTPUT1" value: "T1" } },
            { model_name: "ident" model_version: -1
              input_map { key: "INPUT0" value: "T0" } input_map { key: "INPUT1" value: "T1" }
              output_map { key: "OUTPUT0" value: "X" } output_map { key: "OUTPUT1" value: "Y" } }
            """,
            PAIR_IO,
            XY_IO,
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        inputs = pair()
        response = await srv.server.infer_once(InferenceRequest("e", inputs))
        assert response.outputs["X"] is inputs["A"]
        assert response.outputs["Y"] is inputs["B"]


async def test_independent_steps_run_concurrently(repo: Path) -> None:
    sleepy = 'parameters { key: "sleep_ms" value { string_value: "300" } }'
    write_model(repo, "slow1", pair_model("sleep", extra=sleepy))
    write_model(repo, "slow2", pair_model("sleep", extra=sleepy))
    write_model(
        repo,
        "e",
        ensemble(
            """
            { model_name: "slow1" model_version: -1
              input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
              output_map { key: "OUTPUT0" value: "X" } },
            { model_name: "slow2" model_version: -1
              input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
              output_map { key: "OUTPUT1" value: "Y" } }
            """,
            PAIR_IO,
            XY_IO,
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        slow1, slow2 = srv.server.route("slow1"), srv.server.route("slow2")
        seen_together = False

        async def watch() -> None:
            nonlocal seen_together
            await until(lambda: slow1.executing == 1 and slow2.executing == 1)
            seen_together = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            response = await srv.server.infer_once(InferenceRequest("e", pair()))
        assert response.error is None
        assert seen_together


async def test_ensemble_requests_overlap(repo: Path) -> None:
    sleepy = 'parameters { key: "sleep_ms" value { string_value: "200" } }'
    write_model(
        repo, "slow", pair_model("sleep", extra=sleepy + " instance_group [ { count: 2 } ]")
    )
    write_model(
        repo,
        "e",
        ensemble(
            """
            { model_name: "slow" model_version: -1
              input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
              output_map { key: "OUTPUT0" value: "X" } output_map { key: "OUTPUT1" value: "Y" } }
            """,
            PAIR_IO,
            XY_IO,
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        slow = srv.server.route("slow")
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(srv.server.infer_once, InferenceRequest("e", pair()))
            await until(lambda: slow.executing == 2)


async def test_decoupled_step_streams_through_the_ensemble(repo: Path) -> None:
    write_model(repo, "repeat", REPEAT)
    write_model(repo, "ident", ONE_INPUT_IDENTITY)
    write_model(
        repo,
        "e",
        ensemble(
            """
            { model_name: "repeat" model_version: -1
              input_map { key: "IN" value: "VALUES" } output_map { key: "OUT" value: "EACH" } },
            { model_name: "ident" model_version: -1
              input_map { key: "INPUT0" value: "EACH" } output_map { key: "OUTPUT0" value: "R" } }
            """,
            '{ name: "VALUES" data_type: TYPE_INT32 dims: [ -1 ] }',
            '{ name: "R" data_type: TYPE_INT32 dims: [ 1 ] }',
            max_batch_size=0,
        ),
    )
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert srv.server.model_config("e").model_transaction_policy.decoupled
        request = InferenceRequest("e", {"VALUES": np.array([5, 6, 7], np.int32)})
        responses = [r async for r in srv.server.infer(request)]
        assert [r.error for r in responses] == [None] * 4
        values = [int(r.outputs["R"][0]) for r in responses if r.outputs]
        assert values == [5, 6, 7]
        assert responses[-1].final and not responses[-1].outputs


async def test_a_failing_step_names_its_model(repo: Path) -> None:
    write_model(repo, "add", pair_model("addsub"))
    write_model(repo, "ident", pair_model("raise"))
    write_model(repo, "e", ADD_THEN_IDENTITY)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        response = await srv.server.infer_once(InferenceRequest("e", pair()))
        assert response.error is not None
        assert response.error.message.startswith("in ensemble 'e', ")
        assert "'ident'" in response.error.message
        assert "kerneltest: asked to raise" in response.error.message


async def test_a_refused_step_request_names_its_model(repo: Path) -> None:
    add_models(repo)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        await srv.server.manager.unload("ident")
        response = await srv.server.infer_once(InferenceRequest("e", pair()))
        assert response.error is not None
        assert response.error.message == (
            "in ensemble 'e', Request for unknown model: 'ident' has no available versions"
        )


async def test_ensemble_is_listed_like_any_model(repo: Path) -> None:
    add_models(repo)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        states = {row.name: row.state for row in srv.server.repository_index()}
        assert states == {"add": "READY", "e": "READY", "ident": "READY"}
        metadata = srv.server.model_metadata("e")
        assert metadata.platform == "ensemble"
        assert [t.name for t in metadata.inputs] == ["A", "B"]
        assert [(t.name, t.shape) for t in metadata.outputs] == [("X", (-1, 4)), ("Y", (-1, 4))]
        assert srv.server.model_config("e").ensemble_scheduling is not None


async def test_loading_an_ensemble_loads_its_steps_in_explicit_mode(repo: Path) -> None:
    add_models(repo)
    async with run_server(
        repo, model_control_mode=ModelControlMode.EXPLICIT, **NO_ENDPOINTS
    ) as srv:
        assert not srv.server.is_model_ready("add")
        await srv.server.load_model("e")
        ready = {row.name for row in srv.server.repository_index(ready_only=True)}
        assert ready == {"add", "e", "ident"}
        response = await srv.server.infer_once(InferenceRequest("e", pair()))
        assert response.error is None


async def test_missing_step_model_fails_the_load_with_the_reason(repo: Path) -> None:
    write_model(repo, "add", pair_model("addsub"))
    write_model(repo, "e", ADD_THEN_IDENTITY)
    async with run_server(
        repo, model_control_mode=ModelControlMode.EXPLICIT, **NO_ENDPOINTS
    ) as srv:
        with pytest.raises(KernelError) as caught:
            await srv.server.load_model("e")
        assert (
            "ensemble 'e' depends on 'ident' which has no loaded version. Model 'ident' loading"
            " failed with error: " in caught.value.message
        )
        (row,) = [r for r in srv.server.repository_index() if r.name == "e"]
        assert row.state == "UNAVAILABLE"
        assert "depends on 'ident'" in row.reason


async def test_ensembles_that_need_each_other_fail_to_load(repo: Path) -> None:
    def through(model: str) -> str:
        return ensemble(
            f"""
            {{ model_name: "{model}" model_version: -1
              input_map {{ key: "A" value: "A" }} input_map {{ key: "B" value: "B" }}
              output_map {{ key: "X" value: "X" }} output_map {{ key: "Y" value: "Y" }} }}
            """,
            PAIR_IO,
            XY_IO,
        )

    write_model(repo, "e1", through("e2"))
    write_model(repo, "e2", through("e1"))
    async with run_server(
        repo, model_control_mode=ModelControlMode.EXPLICIT, **NO_ENDPOINTS
    ) as srv:
        with anyio.fail_after(30), pytest.raises(KernelError, match="circular dependency"):
            await srv.server.load_model("e1")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            """{ model_name: "add" input_map { key: "INPUT0" value: "A" }
                 input_map { key: "INPUT1" value: "B" }
                 output_map { key: "OUTPUT0" value: "X" } }""",
            "ensemble output 'Y' is not produced by any step",
        ),
        (
            """{ model_name: "add" input_map { key: "INPUT0" value: "A" }
                 input_map { key: "INPUT1" value: "C" } output_map { key: "OUTPUT0" value: "X" }
                 output_map { key: "OUTPUT1" value: "Y" } }""",
            "reads tensor 'C', which is neither an ensemble input nor an output of a step",
        ),
        (
            """{ model_name: "add" input_map { key: "NOPE" value: "A" }
                 input_map { key: "INPUT1" value: "B" } output_map { key: "OUTPUT0" value: "X" }
                 output_map { key: "OUTPUT1" value: "Y" } }""",
            "model 'add' has no input 'NOPE'",
        ),
    ],
)
async def test_inconsistent_ensembles_fail_to_load(repo: Path, steps: str, message: str) -> None:
    write_model(repo, "add", pair_model("addsub"))
    write_model(repo, "e", ensemble(steps, PAIR_IO, XY_IO))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        (row,) = [r for r in srv.server.repository_index() if r.name == "e"]
        assert row.state == "UNAVAILABLE"
        assert message in row.reason


def test_tritonclient_grpc_serves_an_ensemble(repo: Path) -> None:
    import tritonclient.grpc as grpcclient

    add_models(repo)
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        inputs = pair()
        tensors = []
        for name in ("A", "B"):
            tensor = grpcclient.InferInput(name, [2, 4], "FP32")
            tensor.set_data_from_numpy(inputs[name])
            tensors.append(tensor)
        result = client.infer("e", tensors)
        assert np.array_equal(result.as_numpy("X"), inputs["A"] + inputs["B"])
        assert np.array_equal(result.as_numpy("Y"), inputs["A"] - inputs["B"])
        assert client.get_model_metadata("e").platform == "ensemble"
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index == {"add": "READY", "e": "READY", "ident": "READY"}
        config = client.get_model_config("e", as_json=True)["config"]
        assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == ["add", "ident"]
        client.close()
