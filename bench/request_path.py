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
import cProfile
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import CONFIG, MODEL_PY

from kernel import InferenceRequest, InferenceServer, ModelControlMode, ServerOptions

IN_PROCESS = 'parameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }\n'
IDENTITY = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""
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


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def _instructions(dump_dir: Path) -> int:
    """The instruction count of the last callgrind dump of this process."""
    dumps = sorted(dump_dir.glob(f"callgrind.out.{os.getpid()}.*"), key=os.path.getmtime)
    text = dumps[-1].read_text()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction count in {dumps[-1]}")
    return int(match.group(1))


async def _run(
    models: list[str], requests: int, rounds: int, profile: Path | None, callgrind: Path | None
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
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

                for _ in range(200):  # warm up
                    await one()
                for _ in range(rounds):
                    profiler = cProfile.Profile() if profile is not None else None
                    if profiler is not None:
                        profiler.enable()
                    if callgrind is not None:
                        _callgrind("--zero")
                        _callgrind("--instr=on")
                    start = time.thread_time()
                    for _ in range(requests):
                        await one()
                    cpu = (time.thread_time() - start) / requests * 1e6
                    count = 0.0
                    if callgrind is not None:
                        _callgrind("--dump")
                        _callgrind("--instr=off")
                        count = _instructions(callgrind) / requests
                    results[name].append((cpu, count))
                    if profiler is not None and profile is not None:
                        profiler.disable()
                        profiler.dump_stats(profile / f"{name}.prof")
    return results


def _trees(args: argparse.Namespace) -> None:
    """Run this script once per tree and round, interleaved; print the medians."""
    specs = [spec.partition("=")[::2] for spec in args.tree]
    values: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for label, path in specs if n % 2 == 0 else specs[::-1]:
                tree = Path(path).resolve()
                env = dict(os.environ)
                paths = [str(tree), str(tree / "plugins" / "triton-backend-python" / "src")]
                env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
                command = [sys.executable, str(Path(__file__).resolve())]
                command += ["--requests", str(args.requests), "--rounds", "1"]
                command += ["--models", *args.models]
                if args.callgrind:
                    command = [
                        "valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={tmp}/callgrind.out.%p", *command,
                        "--callgrind-dir", tmp,
                    ]  # fmt: skip
                out = subprocess.run(
                    command, env=env, cwd=tree, check=True, capture_output=True, text=True
                ).stdout
                for line in out.splitlines():
                    if line.startswith("RESULT"):
                        _, model, cpu, count = line.split()
                        value = float(count) if args.callgrind else float(cpu)
                        values.setdefault((label, model), []).append(value)
                        print(f"round {n + 1} {label} {model}: {cpu} us, {float(count):,.0f}"
                              " instructions", file=sys.stderr)  # fmt: skip
    first = specs[0][0]
    what = "instructions" if args.callgrind else "event-loop CPU us"
    print(f"per infer_once, medians of {args.rounds} interleaved rounds of {args.requests}")
    print()
    print(f"| model | tree | {what} | ratio to {first} |")
    print("|---|---|---|---|")
    for model in args.models:
        base = statistics.median(values[(first, model)])
        for label, _ in specs:
            value = statistics.median(values[(label, model)])
            print(f"| {model} | {label} | {value:,.1f} | {value / base:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--profile", type=Path, default=None, help="a folder for <model>.prof")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (--tree)")
    parser.add_argument("--callgrind-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.tree:
        _trees(args)
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
