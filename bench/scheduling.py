"""Throughput of a small ONNX MLP with and without dynamic batching, against plain ONNX Runtime.

    python bench/scheduling.py [--duration 5] [--concurrency 16] [--no-grpc]

Builds an MLP (64 -> 256 -> 256 -> 16, float32, dynamic batch) with ``onnx.helper`` into a
temporary model repository holding it twice: ``mlp_direct`` (Triton's default scheduler, one
request per execution) and ``mlp_dynamic`` (``dynamic_batching``); both have two CPU instances of
one ONNX Runtime thread each, on this two-core machine. It then measures, each for
``--duration`` seconds after a warm-up:

* in-process clients: ``--concurrency`` tasks calling ``server.infer_once`` back to back;
* gRPC clients (when the frontends and tritonclient are installed): the same number of
  ``tritonclient.grpc.aio`` tasks against ``kernel serve`` run as a separate process;
* ONNX Runtime alone, in one process: the same rows fed straight to ``session.run``, one row per
  call and ``--concurrency`` rows per call (the batch the batcher can at best form) -- the
  limit a server can approach.

Prints a markdown table. Needs ``triton-backend-onnx`` (and ``onnx``) installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _harness import free_port

FEATURES, HIDDEN, CLASSES = 64, 256, 16
CONFIG = """
backend: "onnxruntime"
max_batch_size: 64
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ {features} ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ {classes} ] }} ]
instance_group [ {{ count: 2 kind: KIND_CPU }} ]
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
{scheduling}
"""
MODELS = {
    "mlp_direct": "",
    "mlp_dynamic": "dynamic_batching { max_queue_delay_microseconds: 0 }",
}


@dataclass
class Result:
    path: str
    scheduler: str
    throughput: float
    """Inferences (rows) per second."""
    mean_batch: float | None = None
    p50_ms: float | None = None


def build_mlp() -> bytes:
    """The model: two ReLU hidden layers, weights from a fixed seed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = [FEATURES, HIDDEN, HIDDEN, CLASSES]
    nodes, weights = [], []
    current = "X"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, np.float32)
        weights.append(numpy_helper.from_array(w, f"W{layer}"))
        weights.append(numpy_helper.from_array(b, f"B{layer}"))
        last = layer == len(sizes) - 2
        nodes.append(helper.make_node("MatMul", [current, f"W{layer}"], [f"M{layer}"]))
        added = "Y" if last else f"A{layer}"
        nodes.append(helper.make_node("Add", [f"M{layer}", f"B{layer}"], [added]))
        if not last:
            nodes.append(helper.make_node("Relu", [added], [f"H{layer}"]))
            current = f"H{layer}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", CLASSES])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@contextlib.contextmanager
def repository() -> Iterator[Path]:
    from kernel.testing import write_model

    model = build_mlp()
    with tempfile.TemporaryDirectory(prefix="bench-scheduling-") as root:
        repo = Path(root)
        for name, scheduling in MODELS.items():
            config = CONFIG.format(features=FEATURES, classes=CLASSES, scheduling=scheduling)
            write_model(repo, name, config, files={"1/model.onnx": model})
        yield repo


async def drive(
    call: Callable[[np.ndarray], Awaitable[None]], concurrency: int, duration: float
) -> tuple[float, float]:
    """Run ``concurrency`` clients calling ``call`` back to back; (rows/s, p50 latency ms)."""
    rows = np.random.default_rng(1).standard_normal((256, 1, FEATURES)).astype(np.float32)
    latencies: list[float] = []
    counting = False
    stop = False

    async def client(index: int) -> None:
        i = index
        while not stop:
            start = time.perf_counter()
            await call(rows[i % len(rows)])
            if counting:
                latencies.append(time.perf_counter() - start)
            i += concurrency

    tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
    await asyncio.sleep(1.0)  # warm-up
    counting = True
    began = time.perf_counter()
    await asyncio.sleep(duration)
    counting = False
    elapsed = time.perf_counter() - began
    stop = True
    await asyncio.gather(*tasks)
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


async def in_process(repo: Path, concurrency: int, duration: float) -> list[Result]:
    from kernel import InferenceRequest, KernelError
    from kernel.testing import run_server

    results = []
    async with run_server(repo, http_port=None, grpc_port=None, metrics_port=None) as srv:
        for name in MODELS:

            async def call(x: np.ndarray, name: str = name) -> None:
                response = await srv.server.infer_once(InferenceRequest(name, {"X": x}))
                if response.error is not None:
                    raise KernelError(response.error.status, response.error.message)

            stats = srv.server.model_statistics(name)[0]
            before = (stats.inference_count, stats.execution_count)
            throughput, p50 = await drive(call, concurrency, duration)
            batch = (stats.inference_count - before[0]) / max(1, stats.execution_count - before[1])
            results.append(Result("in-process", name, throughput, batch, p50))
    return results


async def over_grpc(repo: Path, concurrency: int, duration: float) -> list[Result]:
    import tritonclient.grpc.aio as grpcclient

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "kernel",
        "serve",
        "--model-repository",
        str(repo),
        "--grpc-port",
        str(port),
        "--allow-http",
        "false",
        "--allow-metrics",
        "false",
    ]
    server = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    results = []
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        for _ in range(300):
            with contextlib.suppress(Exception):
                if await client.is_server_ready():
                    break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("kernel serve did not become ready")
        for name in MODELS:

            async def call(x: np.ndarray, name: str = name) -> None:
                tensor = grpcclient.InferInput("X", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                await client.infer(name, [tensor])

            throughput, p50 = await drive(call, concurrency, duration)
            results.append(Result("tritonclient.grpc.aio", name, throughput, None, p50))
        await client.close()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 60)
    return results


def onnxruntime_alone(repo: Path, concurrency: int, duration: float) -> list[Result]:
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

    session = ort.InferenceSession(
        str(repo / "mlp_direct" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(1)
    results = []
    for rows in (1, concurrency):
        x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:  # warm-up
            session.run(["Y"], {"X": x})
        calls = 0
        began = time.perf_counter()
        while time.perf_counter() - began < duration:
            session.run(["Y"], {"X": x})
            calls += 1
        elapsed = time.perf_counter() - began
        results.append(
            Result(
                "onnxruntime, one process",
                f"batch of {rows}",
                calls * rows / elapsed,
                float(rows),
                elapsed / calls * 1000,
            )
        )
    return results


def frontends_available() -> bool:
    try:
        import tritonclient.grpc.aio  # noqa: F401

        import kernel.frontends._grpc  # noqa: F401
    except ImportError:
        return False
    return True


def table(results: list[Result], concurrency: int) -> str:
    lines = [
        f"| client (concurrency {concurrency}) | model / scheduler | inferences/s"
        " | mean batch | p50 latency (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        batch = "" if r.mean_batch is None else f"{r.mean_batch:.1f}"
        p50 = "" if r.p50_ms is None else f"{r.p50_ms:.2f}"
        lines.append(f"| {r.path} | {r.scheduler} | {r.throughput:,.0f} | {batch} | {p50} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-grpc", action="store_true", help="skip the tritonclient runs")
    args = parser.parse_args()
    results: list[Any] = []
    with repository() as repo:
        results += asyncio.run(in_process(repo, args.concurrency, args.duration))
        if not args.no_grpc and frontends_available():
            results += asyncio.run(over_grpc(repo, args.concurrency, args.duration))
        results += onnxruntime_alone(repo, args.concurrency, args.duration)
    print(f"CPU cores: {os.cpu_count()}")
    print(table(results, args.concurrency))


if __name__ == "__main__":
    main()
