"""``bench/perf.py``'s side-by-side, interleaved: kernel and Triton row after row, several rounds.

``perf.py`` measures every row of one server, then every row of the other; on a machine shared
with other jobs the load changes between the two halves and the ratios drift with it. Here both
servers run at once (an idle server costs nothing) and each row is measured on the kernel, then
at once on Triton, ``--rounds`` times; the table gives each server's median per row and the
ratio of the medians. Same model, repository and perf_analyzer settings as ``perf.py``.

    python bench/python_side_by_side.py [--reference DIR] [--rounds 3] [--seconds 3]
        [--kernel-arg=--backend-config=python,execution-mode=in_process]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import _repository, _start, interleaved_rows, parse_side_by_side, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args, reference, pa = parse_side_by_side(parser)
    # A loaded machine never looks "stable" to perf_analyzer: take its windows as they come.
    extra = ["--stability-percentage=999"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
        servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        try:
            servers["kernel"] = _start("kernel", repo, reference, args.kernel_arg)
            servers["triton"] = _start("triton", repo, reference, [])
            rows = interleaved_rows(pa, servers, args, Path(tmp) / "out.csv", extra)
        finally:
            stop(p for p, _, _ in servers.values())
    print(f"medians of {args.rounds} interleaved rounds, {args.seconds} s windows")
    print()
    print(
        "| protocol | c | kernel infer/s | Triton infer/s | ratio | kernel p99 ms | Triton p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for protocol in args.protocols:
        for c in args.concurrency:
            k = rows[("kernel", protocol, c)]
            t = rows[("triton", protocol, c)]
            kt = statistics.median(r.throughput for r in k)
            tt = statistics.median(r.throughput for r in t)
            kp = statistics.median(r.p99_ms for r in k)
            tp = statistics.median(r.p99_ms for r in t)
            print(
                f"| {protocol} | {c} | {kt:,.0f} | {tt:,.0f} | {kt / tt:.2f} |"
                f" {kp:.2f} | {tp:.2f} |"
            )


if __name__ == "__main__":
    main()
