"""The large-input rows of bench/perf.py, for several checkouts side by side (and Triton): what a
change to the large-tensor or batch path buys, measured in the same minutes as its before.

Each server in turn (``--tree LABEL=PATH``, one ``kernel serve`` per checkout through
bench/_trees.py, and Triton with ``--triton``) gets every row (``PROTOCOL:SHM:CONCURRENCY``)
from perf_analyzer, rounds interleaved; the table gives medians: infer/s, the ratio to the first
server, server and process-tree CPU per request, the mean batch size (statistics API), p99,
perf_analyzer's own CPU seconds and how busy the machine was (``/proc/stat``).

    python bench/large_trees.py --triton --tree before=/tmp/x-before --tree after=. \\
        [--rows grpc:system:4 grpc:system:16] [--rounds 3] [--seconds 3]

``--tree LABEL=PATH::ARGS`` adds ``kernel serve`` arguments (shell-split) for that server.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _trees import interleaved, start_kernel
from perf import _cpu, _perf, _repository, _served, _start, reference_tools, stop


def _machine() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the machine so far."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="LABEL=PATH[::ARGS]")
    parser.add_argument("--triton", action="store_true", help="Triton as the first server")
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--rows", nargs="+", default=["grpc:system:4", "http:system:4"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    reference, pa = reference_tools(args.reference)
    servers: list[tuple[str, Path | None, list[str]]] = []
    if args.triton:
        servers.append(("triton", None, []))
    for spec in args.tree:
        label, _, rest = spec.partition("=")
        path, _, extra = rest.partition("::")
        servers.append((label, Path(path).resolve(), shlex.split(extra)))
    results: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["large"])
        for round_ in range(args.rounds):
            for label, path, extra in interleaved(servers, round_):
                if path is None:
                    proc, http, grpc = _start("triton", repo, reference, [])
                else:
                    proc, http, grpc = start_kernel(path, repo, extra)
                try:
                    for row in args.rows:
                        protocol, shm, concurrency = row.split(":")
                        port = grpc if protocol == "grpc" else http
                        cpu, served, pa_cpu, machine = (
                            _cpu(proc.pid),
                            _served(http, "large"),
                            _children_cpu(),
                            _machine(),
                        )
                        measured = _perf(
                            pa, "large", protocol, port, int(concurrency), shm,
                            Path(tmp) / "out.csv", args.seconds, [],
                        )  # fmt: skip
                        cpu_after, served_after = _cpu(proc.pid), _served(http, "large")
                        machine_after = _machine()
                        requests = max(served_after[0] - served[0], 1)
                        executions = max(served_after[2] - served[2], 1)
                        total = max(machine_after[0] - machine[0], 1)
                        value = (
                            measured.throughput,
                            (cpu_after[0] - cpu[0]) / requests * 1e6,
                            (cpu_after[1] - cpu[1]) / requests * 1e6,
                            (served_after[1] - served[1]) / executions,
                            measured.p99_ms,
                            _children_cpu() - pa_cpu,
                            1 - (machine_after[1] - machine[1]) / total,
                        )
                        results.setdefault((row, label), []).append(value)
                        print(round_, row, label, *(f"{v:.2f}" for v in value), file=sys.stderr)
                finally:
                    stop([proc])
    print(
        "| row | server | infer/s | x first | server CPU us | tree CPU us | batch | p99 ms |"
        " perf_analyzer CPU s | machine busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in args.rows:
        first = 0.0
        for label, _, _ in servers:
            runs = results[(row, label)]
            med = [statistics.median(v[i] for v in runs) for i in range(7)]
            first = first or med[0]
            print(
                f"| {row} | {label} | {med[0]:,.0f} | {med[0] / first:.2f} | {med[1]:.0f} |"
                f" {med[2]:.0f} | {med[3]:.2f} | {med[4]:.2f} | {med[5]:.2f} | {med[6]:.2f} |"
            )


if __name__ == "__main__":
    main()
