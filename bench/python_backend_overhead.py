"""What the Python backend adds to a request, in each execution mode.

A trivial Python model (identity on one FP32[4] tensor) is called three ways, one request at a
time, in one process:

* directly: ``TritonPythonModel().execute([request])`` on a prepared request (the model's own
  cost, the floor);
* through the server, in-process mode: ``InferenceServer.infer_once`` (kernel routing, the
  scheduler, the hop to the instance's worker thread, the request and response wrapping);
* through the server, process mode: the same, with the model in its own process (socket and
  pickling each way).

No network frontend is involved. Prints microseconds per request (the best round: the machine
is shared, and the best round is the least disturbed) and, for the server paths, the
throughput with 8 requests in flight. When the kernel's test backend is installed, the same
through its ``identity`` model (a bare ``async def execute`` on the loop) shows the kernel's own
floor, the part of the overhead that is not the Python backend's.

    python bench/python_backend_overhead.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np

from kernel import InferenceRequest, InferenceServer, ServerOptions
from kernel.manager import ModelControlMode

MODEL_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT0",
                    pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
"""

CONFIG = """
backend: "python"
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}
"""

MODES = {"trivial_in_process": "in_process", "trivial_process": "process"}

FLOOR_CONFIG = """
backend: "kerneltest"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""


def has_floor_backend() -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == "kerneltest" for ep in entry_points(group="kernel.backends"))


def write_repository(root: Path, floor: bool) -> Path:
    for name, mode in MODES.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(mode=mode))
        (root / name / "1" / "model.py").write_text(MODEL_PY)
    if floor:
        (root / "kernel_floor" / "1").mkdir(parents=True)
        (root / "kernel_floor" / "config.pbtxt").write_text(FLOOR_CONFIG)
    return root


def direct_us(model_file: Path, requests: int, rounds: int) -> float:
    import triton_python_backend_utils as pb_utils

    spec = importlib.util.spec_from_file_location("trivial_direct", model_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    request = pb_utils.InferenceRequest(
        model_name="trivial",
        inputs=[pb_utils.Tensor("INPUT0", np.ones(4, np.float32))],
        requested_output_names=["OUTPUT0"],
    )
    batch = [request]
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            model.execute(batch)
        samples.append((time.perf_counter() - start) / requests * 1e6)
    return min(samples)


async def served_us(server: InferenceServer, model: str, requests: int, rounds: int) -> float:
    data = {"INPUT0": np.ones(4, np.float32)}
    for _ in range(50):  # warm up
        await server.infer_once(InferenceRequest(model, data))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            response = await server.infer_once(InferenceRequest(model, data))
            assert response.error is None, response.error
        samples.append((time.perf_counter() - start) / requests * 1e6)
    return min(samples)


async def served_throughput(
    server: InferenceServer, model: str, requests: int, concurrency: int = 8
) -> float:
    data = {"INPUT0": np.ones(4, np.float32)}
    per_worker = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await server.infer_once(InferenceRequest(model, data))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - start)


async def main(requests: int, rounds: int) -> None:
    floor = has_floor_backend()
    models = {**MODES, **({"kernel_floor": "kernel floor (kerneltest identity)"} if floor else {})}
    with tempfile.TemporaryDirectory() as folder:
        repository = write_repository(Path(folder), floor)
        direct = direct_us(repository / "trivial_in_process" / "1" / "model.py", requests, rounds)
        options = ServerOptions(
            model_repositories=[repository],
            model_control_mode=ModelControlMode.EXPLICIT,
            load_models=list(models),
            http_port=None,
            grpc_port=None,
            metrics_port=None,
        )
        server = InferenceServer(options)
        async with server.running():
            rows = []
            for model, mode in models.items():
                per_request = await served_us(server, model, requests, rounds)
                throughput = await served_throughput(server, model, requests)
                rows.append((mode, per_request, throughput))
    print(f"trivial Python model, {requests} sequential requests, best of {rounds} rounds")
    print()
    print("| path | us/request | overhead vs direct (us) | infer/s at 8 in flight |")
    print("|---|---|---|---|")
    print(f"| execute() called directly | {direct:.1f} | - | - |")
    for mode, per_request, throughput in rows:
        print(
            f"| infer_once, {mode} | {per_request:.1f} | {per_request - direct:.1f} |"
            f" {throughput:,.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.rounds))
