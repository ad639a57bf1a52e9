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

from _proc import split_cpu_seconds
from perf import _perf, _repository, _start, parse_side_by_side, stop


def _inferences(http_port: int) -> int:
    url = f"http://127.0.0.1:{http_port}/v2/models/add_sub/stats"
    with urllib.request.urlopen(url) as reply:
        stats = json.load(reply)
    return int(stats["model_stats"][0]["inference_count"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", default=["kernel", "triton"])
    parser.add_argument("--baseline", type=Path, default=None)
    args, reference, pa = parse_side_by_side(parser)
    extra = ["--stability-percentage=999"]
    rows: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
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
                            before = split_cpu_seconds(process.pid)
                            row = _perf(
                                pa,
                                "add_sub",
                                protocol,
                                port,
                                c,
                                "none",
                                Path(tmp) / "o.csv",
                                args.seconds,
                                extra,
                            )
                            after = split_cpu_seconds(process.pid)
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
            stop(p for p, _, _ in servers.values())
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
