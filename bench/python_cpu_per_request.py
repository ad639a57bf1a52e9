"""CPU time per request of the server and of its model processes, under perf_analyzer.

Throughput on a shared 2-core machine moves with everyone else's load; the CPU time a server
spends per request moves much less. This starts ``kernel serve`` (and Triton 2.51 when its
tools are there) on ``bench/perf.py``'s add/sub Python model, runs perf_analyzer on each row,
and reads ``utime + stime`` of the server process and of its child processes (the model
process; Triton's stub) from ``/proc/<pid>/stat`` before and after, and the number of
inferences from the server's statistics endpoint. It prints microseconds of CPU per request
for each side, next to the throughput. Rows are interleaved across servers and rounds.

``--baseline DIR`` adds a server ``base``: ``kernel serve`` with ``PYTHONPATH=DIR``, where DIR
holds an older tree's ``kernel``, ``triton_backend_python`` and ``triton_python_backend_utils``
packages (say, ``git archive`` of ``main``), for an A/B of a change in the same minutes.

    python bench/python_cpu_per_request.py [--rounds 3] [--seconds 3] [--servers kernel triton]
        [--kernel-arg=--backend-config=python,execution-mode=in_process] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import _perf, _repository, _start

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _tree_cpu(pid: int) -> tuple[float, float]:
    """(the process's CPU seconds, its descendants' CPU seconds)."""
    own = _cpu_seconds(pid)
    rest, pending = 0.0, _children(pid)
    while pending:
        child = pending.pop()
        try:
            rest += _cpu_seconds(child)
            pending.extend(_children(child))
        except OSError:
            continue
    return own, rest


def _inferences(http_port: int) -> int:
    url = f"http://127.0.0.1:{http_port}/v2/models/add_sub/stats"
    with urllib.request.urlopen(url) as reply:
        stats = json.load(reply)
    return int(stats["model_stats"][0]["inference_count"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", nargs="+", default=["kernel", "triton"])
    parser.add_argument("--kernel-arg", action="append", default=[])
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    reference = args.reference or Path(os.environ.get("TRITON_REFERENCE", "/work/triton-reference"))
    pa = str(reference / "run-pa")
    extra = ["--stability-percentage=999"]
    rows: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp))
        servers = {
            name: _start(name, repo, reference, args.kernel_arg if name == "kernel" else [])
            for name in args.servers
        }
        if args.baseline is not None:
            os.environ["PYTHONPATH"] = str(args.baseline.resolve())
            try:
                servers["base"] = _start("kernel", repo, reference, args.kernel_arg)
            finally:
                del os.environ["PYTHONPATH"]
        try:
            for _ in range(args.rounds):
                for protocol in args.protocols:
                    for c in args.concurrency:
                        for name, (process, http, grpc) in servers.items():
                            port = grpc if protocol == "grpc" else http
                            before_count = _inferences(http)
                            before = _tree_cpu(process.pid)
                            row = _perf(
                                pa, protocol, port, c, Path(tmp) / "o.csv", args.seconds, extra
                            )
                            after = _tree_cpu(process.pid)
                            count = max(1, _inferences(http) - before_count)
                            server_us = (after[0] - before[0]) / count * 1e6
                            model_us = (after[1] - before[1]) / count * 1e6
                            rows.setdefault((name, protocol, c), []).append(
                                (row.throughput, server_us, model_us)
                            )
                            print(
                                f"{name} {protocol} c={c}: {row.throughput:,.0f} infer/s,"
                                f" server {server_us:.0f} us, children {model_us:.0f} us",
                                file=sys.stderr,
                            )
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=60)
    print(f"medians of {args.rounds} interleaved rounds, {args.seconds} s windows")
    print()
    print("| server | protocol | c | infer/s | server CPU us/req | model process CPU us/req |")
    print("|---|---|---|---|---|---|")
    for (name, protocol, c), values in rows.items():
        tput = statistics.median(v[0] for v in values)
        server = statistics.median(v[1] for v in values)
        model = statistics.median(v[2] for v in values)
        print(f"| {name} | {protocol} | {c} | {tput:,.0f} | {server:.0f} | {model:.0f} |")


if __name__ == "__main__":
    main()
