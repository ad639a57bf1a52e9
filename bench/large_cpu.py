"""CPU time and page faults per inference of the large-input model, server and model process
apart, for several kernel trees at once (interleaved): what each copy of a 196 KB tensor costs.

bench/perf.py's ``large`` model (FP32 [3,128,128] in, three means out, dynamic batching, the
default Python mode: a model process per instance), or with ``--model large_echo`` the same
model returning its input (196 KB out as well), is served by every tree; each row
(protocol x concurrency x shared memory) gives each server in turn ``--requests`` requests from
perf_analyzer (the flags bench/perf.py passes it), and reads before and after, from
``/proc/<pid>/stat``, the CPU time (utime + stime) and minor page faults of the server process
and, apart, of its descendants (the model process); the requests come from the server's
statistics. Rounds alternate the trees' order; the table gives medians.

    python bench/large_cpu.py --tree before=/tmp/x-before --tree after=. \\
        [--rounds 3] [--requests 3000] [--protocols grpc http] [--concurrency 1 16] \\
        [--shared-memory none system] [--model large|large_echo]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import descendants, stat
from _trees import interleaved, start_kernel, trees
from cpu_per_request import _drive, _inference_count
from perf import LARGE_CONFIG, MODELS, _repository, reference_tools, stop

ECHO_CONFIG = LARGE_CONFIG.replace('name: "large"', 'name: "large_echo"').replace(
    "dims: [ 3 ] }", "dims: [ 3, 128, 128 ] }"
)
ECHO_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return responses
"""
MODELS["large_echo"] = (ECHO_CONFIG, ECHO_PY)


def _sample(pid: int) -> tuple[float, int, float, int]:
    """Server CPU, server faults, model processes' CPU, their faults."""
    cpu, faults = stat(pid)
    model_cpu, model_faults = 0.0, 0
    for child in descendants(pid):
        try:
            c, f = stat(child)
        except (OSError, ValueError):
            continue
        model_cpu += c
        model_faults += f
    return cpu, faults, model_cpu, model_faults


def _shared_memory(model: str, shm: str) -> list[str]:
    """perf_analyzer's flags for ``shm`` (its output regions sized for ``model``)."""
    if shm == "none":
        return []
    out = 4096 if model == "large" else 196608
    return [f"--shared-memory={shm}", f"--output-shared-memory-size={out}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--reference", type=Path, default=None, help="run-pa's folder")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    parser.add_argument("--shared-memory", nargs="+", default=["none", "system"])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["large", "large_echo"], default="large")
    args = parser.parse_args()
    if not args.tree:
        parser.error("give at least one --tree LABEL=PATH")
    _, pa = reference_tools(args.reference)
    # (label, shm, protocol, c) -> [(server us, server faults, model us, model faults)] per round
    rows: dict[tuple[str, str, str, int], list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), [args.model])
        servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        try:
            for label, tree in trees(args.tree):
                servers[label] = start_kernel(tree, repo, [])
            for n in range(args.rounds):
                for shm in args.shared_memory:
                    for protocol in args.protocols:
                        for c in args.concurrency:
                            for label, (proc, http, grpc) in interleaved(list(servers.items()), n):
                                count = _inference_count(http, args.model)
                                before = _sample(proc.pid)
                                port = grpc if protocol == "grpc" else http
                                _drive(
                                    pa,
                                    args.model,
                                    protocol,
                                    port,
                                    c,
                                    args.requests,
                                    *_shared_memory(args.model, shm),
                                )
                                after = _sample(proc.pid)
                                count = max(_inference_count(http, args.model) - count, 1)
                                d = [(a - b) / count for a, b in zip(after, before, strict=True)]
                                row = (d[0] * 1e6, d[1], d[2] * 1e6, d[3])
                                rows.setdefault((label, shm, protocol, c), []).append(row)
                                print(f"round {n + 1} {label} {shm} {protocol} c={c}: {count}"
                                      " requests; server %.1f us %.2f faults, model %.1f us"
                                      " %.2f faults per inference" % row,
                                      file=sys.stderr)  # fmt: skip
        finally:
            stop(p for p, _, _ in servers.values())
    print(
        f"{args.model}: per inference, medians of {args.rounds} interleaved rounds"
        f" of {args.requests} requests"
    )
    print()
    print("| shm | protocol | c | tree | server CPU us | server faults | model CPU us |"
          " model faults | total CPU us |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for shm in args.shared_memory:
        for protocol in args.protocols:
            for c in args.concurrency:
                for label in servers:
                    samples = rows[(label, shm, protocol, c)]
                    med = [statistics.median(s[i] for s in samples) for i in range(4)]
                    total = statistics.median(s[0] + s[2] for s in samples)
                    print(f"| {shm} | {protocol} | {c} | {label} | {med[0]:.0f} | {med[1]:.2f} |"
                          f" {med[2]:.0f} | {med[3]:.2f} | {total:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
