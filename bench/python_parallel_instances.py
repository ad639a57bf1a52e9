"""Instances of a CPU-bound pure-Python model in parallel: one instance against two.

The model burns the CPU in pure Python (a loop of integer arithmetic, ~5 ms a request, holding
its GIL throughout). Each instance of a ``process``-mode model has its own process and GIL, so
two instances on two cores should serve about twice what one serves; ``in_process`` instances
share the server's GIL, so a second one adds nothing. Requests go through the server's
``infer_once`` (no network frontend), 4 in flight, for a fixed time per configuration.

    python bench/python_parallel_instances.py [--seconds 5] [--work 200000] [--rounds 3]

Prints infer/s per configuration and the ratio of two instances to one for each mode. The
machine is shared with other jobs: the ratio within one run is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kernel import InferenceRequest, InferenceServer, ModelControlMode, ServerOptions

MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            total = 0
            for i in range(n):
                total = (total + i * i) % 1000003
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("TOTAL", np.array([total], np.int64))]))
        return responses
"""

CONFIG = """
backend: "python"
input [ {{ name: "N" data_type: TYPE_INT64 dims: [ 1 ] }} ]
output [ {{ name: "TOTAL" data_type: TYPE_INT64 dims: [ 1 ] }} ]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}
"""

CONFIGS = {
    f"{mode}_x{count}": (mode, count) for mode in ("process", "in_process") for count in (1, 2)
}


def write_repository(root: Path) -> Path:
    for name, (mode, count) in CONFIGS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(mode=mode, count=count))
        (root / name / "1" / "model.py").write_text(MODEL_PY)
    return root


async def throughput(
    server: InferenceServer, model: str, work: int, seconds: float, in_flight: int = 4
) -> float:
    data = {"N": np.array([work], np.int64)}
    for _ in range(4):  # warm up every instance
        await asyncio.gather(
            *(server.infer_once(InferenceRequest(model, data)) for _ in range(in_flight))
        )
    done = 0
    end = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < end:
            response = await server.infer_once(InferenceRequest(model, data))
            assert response.error is None, response.error
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return done / (time.monotonic() - start)


async def main(seconds: float, work: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        repository = write_repository(Path(folder))
        options = ServerOptions(
            model_repositories=[repository],
            model_control_mode=ModelControlMode.EXPLICIT,
            load_models=list(CONFIGS),
            http_port=None,
            grpc_port=None,
            metrics_port=None,
        )
        server = InferenceServer(options)
        samples: dict[str, list[float]] = {name: [] for name in CONFIGS}
        async with server.running():
            for _ in range(rounds):  # interleaved: the machine's load drifts between rounds
                for name in CONFIGS:
                    samples[name].append(await throughput(server, name, work, seconds))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    print(
        f"CPU-bound pure-Python model ({work} loop steps a request), 4 in flight, median of"
        f" {rounds} interleaved {seconds} s rounds"
    )
    print()
    print("| mode | 1 instance infer/s | 2 instances infer/s | 2 / 1 |")
    print("|---|---|---|---|")
    for mode in ("process", "in_process"):
        one, two = rates[f"{mode}_x1"], rates[f"{mode}_x2"]
        print(f"| {mode} | {one:,.1f} | {two:,.1f} | {two / one:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--work", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.seconds, arguments.work, arguments.rounds))
