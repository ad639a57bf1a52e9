"""What the Python backend adds to a request, in each execution mode.

A trivial Python model (identity on one FP32[4] tensor) is called three ways, one request at a
time, in one process:

* directly: ``TritonPythonModel().execute([request])`` on a prepared request (the model's own
  cost, the floor);
* through the server, in-process mode: ``InferenceServer.infer_once`` (kernel routing, the
  scheduler, the hop to the instance's worker thread, the request and response wrapping);
* through the server, process mode (the default): the same, with the model in its own process
  (requests and responses through shared memory rings, large tensors through shared memory slabs).

No network frontend is involved in that first table. It prints microseconds per request (the
best round: the machine is shared, and the best round is the least disturbed) and, for the
server paths, the throughput with 8 requests in flight. When the kernel's test backend is
installed, the same through its ``identity`` model (a bare ``async def execute`` on the loop)
shows the kernel's own floor, the part of the overhead that is not the Python backend's.

A second table compares with Triton's stub round trip when the reference server is there
(``--reference DIR``, default ``/work/triton-reference``, its ``run-triton``): the same model
served over HTTP by ``kernel serve`` (both modes) and by Triton 2.51, sequential requests from
one client, and for each the backend's time per request as the server's own statistics
endpoint reports it (``compute_input + compute_infer + compute_output``: for Triton's Python
backend that spans the round trip to its stub process and back; for the kernel, the instance's
``execute``, which in process mode is the round trip to the model process).

    python bench/python_backend_overhead.py [--requests 2000] [--rounds 5] [--reference DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _harness import free_port

from kernel import InferenceRequest, InferenceServer, ModelControlMode, ServerOptions

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


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bytes(reply.read())


def _wait_ready(http: int, models: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for model in models:
                _get(f"http://127.0.0.1:{http}/v2/models/{model}/ready")
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def _backend_ns(http: int, model: str) -> tuple[int, int]:
    """(requests counted, backend ns) from the statistics endpoint."""
    stats = json.loads(_get(f"http://127.0.0.1:{http}/v2/models/{model}/stats"))
    inference = stats["model_stats"][0]["inference_stats"]
    total = sum(
        int(inference[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output")
    )
    return int(inference["success"]["count"]), total


def wire_rows(
    server: str, command: list[str], models: dict[str, str], requests: int
) -> list[tuple[str, float, float]]:
    """(label, client us/request median, backend us/request) per model, over HTTP."""
    import tritonclient.http as httpclient

    http = free_port()
    ports = [f"--http-port={http}", f"--grpc-port={free_port()}", f"--metrics-port={free_port()}"]
    process = subprocess.Popen(
        [*command, *ports], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rows = []
    try:
        _wait_ready(http, list(models))
        with httpclient.InferenceServerClient(f"127.0.0.1:{http}") as client:
            for model, label in models.items():
                inputs = [httpclient.InferInput("INPUT0", [4], "FP32")]
                inputs[0].set_data_from_numpy(np.ones(4, np.float32))
                for _ in range(100):  # warm up
                    client.infer(model, inputs)
                count0, ns0 = _backend_ns(http, model)
                samples = []
                for _ in range(requests):
                    start = time.perf_counter()
                    client.infer(model, inputs)
                    samples.append(time.perf_counter() - start)
                count1, ns1 = _backend_ns(http, model)
                backend = (ns1 - ns0) / max(1, count1 - count0) / 1000
                rows.append((f"{server}, {label}", statistics.median(samples) * 1e6, backend))
    finally:
        process.terminate()
        process.wait(timeout=60)
    return rows


def over_the_wire(requests: int, reference: Path | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        repository = write_repository(Path(folder) / "kernel", floor=False)
        kernel = shutil.which("kernel") or str(Path(sys.executable).parent / "kernel")
        rows = wire_rows(
            "kernel",
            [kernel, "serve", f"--model-repository={repository}"],
            {"trivial_process": "process (default)", "trivial_in_process": "in_process"},
            requests,
        )
        if reference is not None and (reference / "run-triton").exists():
            triton_repository = Path(folder) / "triton"
            triton_repository.mkdir()
            shutil.copytree(repository / "trivial_process", triton_repository / "trivial")
            rows += wire_rows(
                "Triton 2.51",
                [str(reference / "run-triton"), f"--model-repository={triton_repository}"],
                {"trivial": "stub process"},
                requests,
            )
    print()
    print(f"over HTTP, one client, {requests} sequential requests")
    print()
    print("| server, mode | client us/request (median) | backend us/request (server statistics) |")
    print("|---|---|---|")
    for label, client_us, backend_us in rows:
        print(f"| {label} | {client_us:.0f} | {backend_us:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path(os.environ.get("TRITON_REFERENCE", "/work/triton-reference")),
        help="folder of setup-reference.sh's tools (run-triton); skipped when absent",
    )
    parser.add_argument("--skip-wire", action="store_true", help="only the in-process table")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.rounds))
    if not arguments.skip_wire:
        over_the_wire(arguments.requests, arguments.reference)
