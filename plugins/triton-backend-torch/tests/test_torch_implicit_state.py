"""Implicit sequence state (``sequence_batching.state``) on a TorchScript accumulator, end to end.

The module adds INPUT__0 to the state it is given (ACC_IN__1) and returns the sum twice:
OUTPUT__0, the declared output, and the state output ACC_OUT__1, which the config does not
declare. Triton's ``<name>__<index>`` rule places state tensors too. The client never asks for
ACC_OUT__1: the kernel must still read it and carry it on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel.testing.clients import infer_inputs


class Accumulator(torch.nn.Module):
    """(value, acc) -> (value + acc, value + acc)."""

    def forward(self, value: torch.Tensor, acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = value + acc
        return total, total.clone()


STRATEGIES = {
    "direct": "direct { }",
    "oldest": "oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 1000 }",
}


def accumulator_config(strategy: str) -> str:
    return f"""
backend: "pytorch"
max_batch_size: 4
input [ {{ name: "INPUT__0" data_type: TYPE_INT64 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_INT64 dims: [ 1 ] }} ]
sequence_batching {{
  {STRATEGIES[strategy]}
  state [ {{
    input_name: "ACC_IN__1" output_name: "ACC_OUT__1" data_type: TYPE_INT64 dims: [ 1 ]
    initial_state {{ data_type: TYPE_INT64 dims: [ 1 ] zero_data: true name: "zero" }}
  }} ]
}}
"""


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("outputs", [None, ["OUTPUT__0"]], ids=["all-outputs", "named-output"])
def test_torchscript_state_is_carried(
    kit: Any,
    repo: Path,
    serve: Callable[..., Any],
    protocol: str,
    strategy: str,
    outputs: list[str] | None,
) -> None:
    kit.write_torch(repo, "acc", kit.scripted(Accumulator()), accumulator_config(strategy))
    served = serve(repo)
    module: Any = grpcclient if protocol == "grpc" else httpclient
    requested = None if outputs is None else [module.InferRequestedOutput(n) for n in outputs]
    client = served.client(protocol)
    try:
        for corrid, values, want in ((5, [1, 2, 3, 4], [1, 3, 6, 10]), (5, [7, 1], [7, 8])):
            got = []
            for position, value in enumerate(values):
                result = client.infer(
                    "acc",
                    infer_inputs(protocol, {"INPUT__0": np.array([[value]], np.int64)}),
                    outputs=requested,
                    sequence_id=corrid,
                    sequence_start=position == 0,
                    sequence_end=position == len(values) - 1,
                )
                assert result.as_numpy("ACC_OUT__1") is None  # undeclared: never sent
                got.append(int(result.as_numpy("OUTPUT__0")[0, 0]))
            assert got == want
    finally:
        client.close()
