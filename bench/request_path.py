"""The kernel's protocol-neutral request path alone (no frontend, no sockets): what
``InferenceServer.infer_once`` costs per request, measured in ways a loaded machine does not move
much: event-loop CPU time per request, or (``--callgrind``) instructions.

One server runs in this process (uvloop) with three models: bench/perf.py's Python add/sub
in-process (``add_sub_in_process``: the model runs on the instance's thread), the same in its own
process (``add_sub``, the default mode: the instance implements ``ModelInstance.submit``), and the
kernel's test backend ``identity`` (``identity``: a plain ``def execute`` on the instance's
thread, the kernel's floor). Each model gets ``--requests`` sequential requests per round, each
a fresh ``InferenceRequest`` of two FP32[4] inputs as a frontend would build it. Measured: the
event loop thread's CPU time (``time.thread_time``: the instance thread and the model process are
not counted), and under ``--callgrind`` the user-space instructions of the whole server process
(the model process is not traced; valgrind's callgrind, switched on for the measured requests
only: a count, not a time, so other jobs on the machine do not change it).

    python bench/request_path.py [--requests 5000] [--rounds 3] [--models add_sub identity]
        [--profile DIR]
    python bench/request_path.py --tree before=/path/to/old/checkout --tree after=. \
        [--callgrind] [--rounds 3] [--requests 2000]

With ``--tree``, each tree runs in its own process (its ``kernel`` first on ``PYTHONPATH``),
interleaved, and the table gives medians and ratios to the first tree, per model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import uvloop
from kernel_test_backends.configs import ADDSUB

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import add_arguments, measure
from _trees import compare
from perf import CONFIG, MODEL_PY

from kernel import InferenceRequest, InferenceServer, ModelControlMode, ServerOptions

IN_PROCESS = 'parameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }\n'
IDENTITY = ADDSUB.replace('"addsub"', '"identity"')  # two FP32[4] inputs, as add/sub
MODELS = ("add_sub_in_process", "add_sub", "identity")


def _repository(root: Path, models: list[str]) -> Path:
    for name in models:
        (root / name / "1").mkdir(parents=True)
        if name == "identity":
            (root / name / "config.pbtxt").write_text(IDENTITY)
            continue
        config = CONFIG.replace('name: "add_sub"', f'name: "{name}"')
        if name == "add_sub_in_process":
            config += IN_PROCESS
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(MODEL_PY)
    return root


async def _run(
    models: list[str], requests: int, rounds: int, profile: Path | None, callgrind: Path | None
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {}
    a = np.arange(4, dtype=np.float32)
    b = np.ones(4, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        options = ServerOptions(
            model_repositories=[_repository(Path(tmp), models)],
            model_control_mode=ModelControlMode.EXPLICIT,
            load_models=models,
            http_port=None,
            grpc_port=None,
            metrics_port=None,
        )
        server = InferenceServer(options)
        async with server.running():
            for name in models:
                target = server.prepare(name)

                async def one(name: str = name, target: object = target) -> None:
                    request = InferenceRequest(name, {"INPUT0": a, "INPUT1": b})
                    response = await server.infer_once(request, target)  # type: ignore[arg-type]
                    assert response.error is None, response.error

                results[name] = await measure(
                    one,
                    requests,
                    rounds,
                    warmup=200,
                    profile=profile / f"{name}.prof" if profile is not None else None,
                    callgrind=callgrind,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, requests=5000, rounds=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--profile", type=Path, default=None, help="a folder for <model>.prof")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.tree:
        compare(args, "per infer_once", args.models, ["--models", *args.models])
        return
    results = uvloop.run(
        _run(args.models, args.requests, args.rounds, args.profile, args.callgrind_dir)
    )
    for model, rows in results.items():
        cpus = [cpu for cpu, _ in rows]
        print(f"{model}: event-loop CPU per request median {statistics.median(cpus):.2f} us"
              f" (min {min(cpus):.2f}) over {args.rounds} rounds of {args.requests}")  # fmt: skip
        print("RESULT", model, statistics.median(cpus), statistics.median(c for _, c in rows))


if __name__ == "__main__":
    main()
