"""Implicit sequence state (``sequence_batching.state``) on an ONNX accumulator, end to end.

The model adds INPUT to the state it is given (ACC_IN) and returns the sum both as OUTPUT and as
the state output ACC_OUT. The state output is not declared as a model output, so the client never
sees it and never asks for it: the kernel must still fetch it and carry it to the next request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from kernel.testing.clients import infer_inputs


def accumulator_model() -> onnx.ModelProto:
    """OUTPUT = ACC_OUT = INPUT + ACC_IN, all INT32 [batch, 1]; START is taken and unused."""
    shape: list[int | str] = ["batch", 1]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT", "ACC_IN"], ["SUM"]),
            helper.make_node("Identity", ["SUM"], ["OUTPUT"]),
            helper.make_node("Identity", ["SUM"], ["ACC_OUT"]),
        ],
        "accumulator",
        [
            helper.make_tensor_value_info("INPUT", TensorProto.INT32, shape),
            helper.make_tensor_value_info("ACC_IN", TensorProto.INT32, shape),
        ],
        [
            helper.make_tensor_value_info("OUTPUT", TensorProto.INT32, shape),
            helper.make_tensor_value_info("ACC_OUT", TensorProto.INT32, shape),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


STRATEGIES = {
    "direct": "direct { }",
    "oldest": "oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 1000 }",
}


def accumulator_config(strategy: str, *, declare_state: bool = False) -> str:
    state_output = '{ name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] }' if declare_state else ""
    return f"""
backend: "onnxruntime"
max_batch_size: 4
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }}{"," if declare_state else ""}
         {state_output} ]
sequence_batching {{
  {STRATEGIES[strategy]}
  state [ {{
    input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state {{ data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" }}
  }} ]
}}
"""


def run_sequence(
    served: Any, protocol: str, corrid: int, values: list[int], outputs: list[str] | None
) -> list[dict[str, Any]]:
    """One sequence, request by request; each response's outputs by name."""
    module: Any = grpcclient if protocol == "grpc" else httpclient
    requested = None
    if outputs is not None:
        requested = [module.InferRequestedOutput(name) for name in outputs]
    client = served.client(protocol)
    try:
        answers = []
        for position, value in enumerate(values):
            result = client.infer(
                "acc",
                infer_inputs(protocol, {"INPUT": np.array([[value]], np.int32)}),
                outputs=requested,
                sequence_id=corrid,
                sequence_start=position == 0,
                sequence_end=position == len(values) - 1,
            )
            response = result.get_response()
            names = (
                [o.name for o in response.outputs]
                if protocol == "grpc"
                else [o["name"] for o in response["outputs"]]
            )
            answers.append({name: result.as_numpy(name) for name in names})
        return answers
    finally:
        client.close()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("outputs", [None, ["OUTPUT"]], ids=["all-outputs", "named-output"])
def test_state_is_carried_whether_or_not_the_client_asks(
    repo: Path,
    serve: Callable[..., Any],
    protocol: str,
    strategy: str,
    outputs: list[str] | None,
) -> None:
    folder = repo / "acc"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(accumulator_config(strategy))
    (folder / "1" / "model.onnx").write_bytes(accumulator_model().SerializeToString())
    served = serve(repo)
    answers = run_sequence(served, protocol, 7, [1, 2, 3, 4], outputs)
    assert [int(a["OUTPUT"][0, 0]) for a in answers] == [1, 3, 6, 10]
    assert all(set(a) == {"OUTPUT"} for a in answers)  # the undeclared state stays hidden
    # A new sequence on the same id starts again from the initial state.
    again = run_sequence(served, protocol, 7, [5, 5], outputs)
    assert [int(a["OUTPUT"][0, 0]) for a in again] == [5, 10]


def test_sequences_keep_their_own_state(
    repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    folder = repo / "acc"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(accumulator_config("oldest"))
    (folder / "1" / "model.onnx").write_bytes(accumulator_model().SerializeToString())
    served = serve(repo)
    client = served.client(protocol)
    try:
        totals = {11: 0, 12: 0}
        for step in range(3):
            for corrid, scale in ((11, 1), (12, 100)):
                value = scale * (step + 1)
                totals[corrid] += value
                result = client.infer(
                    "acc",
                    infer_inputs(protocol, {"INPUT": np.array([[value]], np.int32)}),
                    sequence_id=corrid,
                    sequence_start=step == 0,
                    sequence_end=step == 2,
                )
                assert int(result.as_numpy("OUTPUT")[0, 0]) == totals[corrid]
    finally:
        client.close()


def test_a_declared_state_output_is_returned_only_when_asked(
    repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    folder = repo / "acc"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(accumulator_config("direct", declare_state=True))
    (folder / "1" / "model.onnx").write_bytes(accumulator_model().SerializeToString())
    served = serve(repo)
    every = run_sequence(served, protocol, 3, [2, 3], None)
    assert [int(a["ACC_OUT"][0, 0]) for a in every] == [2, 5]
    named = run_sequence(served, protocol, 4, [2, 3], ["OUTPUT"])
    assert [set(a) for a in named] == [{"OUTPUT"}, {"OUTPUT"}]
    assert int(named[-1]["OUTPUT"][0, 0]) == 5
