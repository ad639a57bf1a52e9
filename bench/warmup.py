"""First-request latency with and without ``model_warmup``, on an ONNX and a TorchScript model.

Each round starts a fresh server on a fresh repository, waits for the model to be READY, then
times the first request a client sends (tritonclient, gRPC) and the median of the next 20.
Each round runs in a fresh interpreter, so no round inherits what a framework cached in an
earlier one; rounds with and without warmup alternate; figures are medians over the rounds.
Without warmup the first request pays for the framework's lazy work (ONNX Runtime's arenas and
kernel choice, TorchScript's profiling runs); with ``model_warmup`` the load pays it instead.

Needs the ONNX and torch plugins and their test extras (onnx, tritonclient):

    python bench/warmup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper

from kernel.testing import ServerThread, write_model

FEATURES, HIDDEN, LAYERS = 256, 1024, 4
TORCH_WIDTH = 64

WARMUP = """
model_warmup [ {{
  name: "zeros" batch_size: 1 count: 3
  inputs {{ key: "{input}" value: {{ data_type: TYPE_FP32 dims: [ {features} ] zero_data: true }} }}
}} ]
"""


def onnx_model() -> bytes:
    """X [batch, 256] -> 4 x (MatMul 1024, Relu) -> Y [batch, 1024], fixed random weights."""
    rng = np.random.default_rng(0)
    nodes, weights, current, width = [], [], "X", FEATURES
    for layer in range(LAYERS):
        w = (rng.standard_normal((width, HIDDEN)) / np.sqrt(width)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"W{layer}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{layer}"], [f"M{layer}"]))
        out = "Y" if layer == LAYERS - 1 else f"A{layer}"
        nodes.append(helper.make_node("Relu", [f"M{layer}"], [out]))
        current, width = out, HIDDEN
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", HIDDEN])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class _Deep(torch.nn.Module):
    """48 small layers: many ops for TorchScript's profiling executor to record and optimize
    (its first two calls), cheap to run afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(TORCH_WIDTH, TORCH_WIDTH) for _ in range(48)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x)) * 0.5 + torch.sigmoid(x) - 0.1
        return x


def torch_model() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_Deep().eval()), buffer)
    return buffer.getvalue()


MODELS: dict[str, tuple[str, str, str, str, int, int]] = {
    # name: (config head, file, input, output, input width, output width)
    "onnx": ('backend: "onnxruntime"', "model.onnx", "X", "Y", FEATURES, HIDDEN),
    "torch": ('backend: "pytorch"', "model.pt", "INPUT__0", "OUTPUT__0", TORCH_WIDTH, TORCH_WIDTH),
}


def config(kind: str, warm: bool) -> str:
    head, _, name_in, name_out, width_in, width_out = MODELS[kind]
    text = f"""
{head}
max_batch_size: 8
input [ {{ name: "{name_in}" data_type: TYPE_FP32 dims: [ {width_in} ] }} ]
output [ {{ name: "{name_out}" data_type: TYPE_FP32 dims: [ {width_out} ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""
    return text + (WARMUP.format(input=name_in, features=width_in) if warm else "")


def one_round(kind: str, payload: bytes, warm: bool) -> tuple[float, float, float]:
    """(load s, first request ms, median of the next 20 ms) on a fresh server."""
    _, file, name_in, _, width, _ = MODELS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp), "m", config(kind, warm), files={f"1/{file}": payload})
        start = time.perf_counter()
        with ServerThread(tmp, http_port=None, metrics_port=None) as running:
            load = time.perf_counter() - start
            client = grpcclient.InferenceServerClient(running.grpc_url)
            client.is_model_ready("m")  # the connection is up before the clock starts
            data = np.random.default_rng(1).standard_normal((1, width)).astype(np.float32)
            tensor = grpcclient.InferInput(name_in, [1, width], "FP32")
            tensor.set_data_from_numpy(data)
            times = []
            for _ in range(21):
                begin = time.perf_counter()
                client.infer("m", [tensor])
                times.append((time.perf_counter() - begin) * 1000)
            client.close()
    return load, times[0], statistics.median(times[1:])


def _in_fresh_process(kind: str, warm: bool) -> tuple[float, float, float]:
    """One round in a new interpreter: nothing the framework cached in an earlier round (its
    thread pools, TorchScript's compiled graphs) helps this one."""
    command = [sys.executable, __file__, "--one", kind, "yes" if warm else "no"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    load, first, later = json.loads(done.stdout.strip().splitlines()[-1])
    return load, first, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, warm = args.one
        payload = onnx_model() if kind == "onnx" else torch_model()
        print(json.dumps(one_round(kind, payload, warm == "yes")))
        return
    results: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):  # interleaved, so load on the machine hits all alike
        for kind in MODELS:
            for warm in (False, True):
                results.setdefault((kind, warm), []).append(_in_fresh_process(kind, warm))
    print("| model | warmup | ready after s | first request ms | later requests ms |")
    print("|---|---|---|---|---|")
    for (kind, warm), rounds in sorted(results.items()):
        load, first, later = (statistics.median(r[i] for r in rounds) for i in range(3))
        print(f"| {kind} | {'yes' if warm else 'no'} | {load:.2f} | {first:.1f} | {later:.2f} |")


if __name__ == "__main__":
    main()
