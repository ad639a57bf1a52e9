"""Server CPU time per request, for several kernel trees at once: a speed measure that survives
a loaded machine.

Throughput moves with whatever else runs on the machine; the CPU time the server spends per
request moves much less. Every tree is served at once (like ``bench/perf_trees.py``), and for
each row (protocol x concurrency), each server in turn gets ``--requests`` requests from
perf_analyzer while its process tree's CPU time (``utime + stime`` of ``/proc/<pid>/stat``, the
process and its descendants) is read before and after; the requests it answered are read from
its statistics (``inference_count``, so perf_analyzer's warm-up counts too). Rounds interleave
the trees; the table gives each tree's median microseconds of CPU per request and the ratios
to the first tree.

    python bench/cpu_per_request.py --tree before=/path/to/old/checkout --tree after=. \
        [--rounds 5] [--requests 20000] [--protocols http grpc] [--concurrency 1 4 8] \
        [--kernel-arg=--backend-config=python,execution-mode=in_process] \
        [--repository DIR --model NAME] [--profile DIR]

A tree is a source checkout of this repository, served by this venv's interpreter with the
tree's ``kernel`` and Python plugin first on ``PYTHONPATH``. Without ``--repository`` the model
is bench/perf.py's Python add/sub. ``--profile DIR`` runs each server under cProfile instead
(``DIR/<label>.prof``, written when it stops; CPU figures are then the profiler's too).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import tree_cpu_seconds
from _trees import interleaved, start_kernel, trees
from perf import _repository, reference_tools, stop


def _inference_count(http_port: int, model: str) -> int:
    url = f"http://127.0.0.1:{http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=30) as r:
        stats = json.load(r)
    return sum(int(s["inference_count"]) for s in stats["model_stats"])


def _drive(
    pa: str, model: str, protocol: str, port: int, concurrency: int, requests: int, *extra: str
) -> None:
    """perf_analyzer: ``requests`` requests at ``concurrency``, no warm-up of its own."""
    command = [
        pa, "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
        f"--concurrency-range={concurrency}:{concurrency}", f"--request-count={requests}",
        "--warmup-request-count=0", *extra,
    ]  # fmt: skip
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--reference", type=Path, default=None, help="run-pa's folder")
    parser.add_argument("--repository", type=Path, default=None)
    parser.add_argument("--model", default="add_sub")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc"])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernel-arg", action="append", default=[])
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    if not args.tree:
        parser.error("give at least one --tree LABEL=PATH")
    _, pa = reference_tools(args.reference)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    # (label, protocol, c) -> microseconds of CPU per request, one per round
    rows: dict[tuple[str, str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repository or _repository(Path(tmp), ["add_sub"])
        servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        try:
            for label, tree in trees(args.tree):
                profile = args.profile / f"{label}.prof" if args.profile is not None else None
                servers[label] = start_kernel(tree, repo, args.kernel_arg, profile)
            for n in range(args.rounds):
                for protocol in args.protocols:
                    for c in args.concurrency:
                        for label, (proc, http, grpc) in interleaved(list(servers.items()), n):
                            count = _inference_count(http, args.model)
                            cpu = tree_cpu_seconds(proc.pid)
                            port = grpc if protocol == "grpc" else http
                            _drive(pa, args.model, protocol, port, c, args.requests)
                            cpu = tree_cpu_seconds(proc.pid) - cpu
                            count = _inference_count(http, args.model) - count
                            us = cpu / max(count, 1) * 1e6
                            rows.setdefault((label, protocol, c), []).append(us)
                            print(f"round {n + 1} {label} {protocol} c={c}: {count} requests,"
                                  f" {us:.1f} us CPU each", file=sys.stderr)  # fmt: skip
        finally:
            stop(
                (p for p, _, _ in servers.values()),
                signal.SIGINT if args.profile else signal.SIGTERM,
            )
    names = list(servers)
    first = names[0]
    print(f"server CPU per request (us), medians of {args.rounds} interleaved rounds of"
          f" {args.requests} requests")  # fmt: skip
    print()
    ratios = [f"{n}/{first}" for n in names[1:]]
    print("| protocol | c | " + " | ".join(names) + " | " + " | ".join(ratios) + " |")
    print("|---|---|" + "---|" * (len(names) + len(ratios)))
    for protocol in args.protocols:
        for c in args.concurrency:
            med = {n: statistics.median(rows[(n, protocol, c)]) for n in names}
            cells = [f"{med[n]:.1f}" for n in names]
            cells += [f"{med[n] / med[first]:.3f}" for n in names[1:]]
            print(f"| {protocol} | {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
