"""``bench/perf.py``'s side by side for several kernel trees at once, interleaved row by row.

To show that a change did not cost speed, the kernel before the change and after it are served
together with Triton, and every row (protocol x concurrency) is measured on each server in turn,
``--rounds`` times; the table gives each server's median and the ratios. Interleaving keeps the
ratios honest on a machine whose load changes between minutes (a sequential perf.py run is not).

    python bench/perf_trees.py --tree before=/path/to/old/checkout --rounds 3 \
        [--kernel-arg=--backend-config=python,execution-mode=in_process] [--reference DIR]

A tree is a source checkout of this repository; it is served by this venv's interpreter with the
tree's ``kernel`` and Python plugin first on ``PYTHONPATH`` (the current checkout is ``after``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _trees import start_kernel, trees
from perf import _repository, _start, interleaved_rows, parse_side_by_side, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--no-triton", action="store_true")
    args, reference, pa = parse_side_by_side(parser)
    extra = ["--stability-percentage=999"]  # take perf_analyzer's windows as they come
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
        servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        try:
            for label, tree in trees(args.tree):
                servers[label] = start_kernel(tree, repo, args.kernel_arg)
            servers["after"] = start_kernel(None, repo, args.kernel_arg)
            if not args.no_triton and (reference / "run-triton").exists():
                servers["triton"] = _start("triton", repo, reference, [])
            rows = interleaved_rows(pa, servers, args, Path(tmp) / "out.csv", extra)
        finally:
            stop(p for p, _, _ in servers.values())
    names = list(servers)
    print(
        f"medians of {args.rounds} interleaved rounds, {args.seconds} s windows; infer/s (p99 ms)"
    )
    print()
    ratios = [f"after/{n}" for n in names if n != "after"]
    print("| protocol | c | " + " | ".join(names) + " | " + " | ".join(ratios) + " |")
    print("|---|---|" + "---|" * (len(names) + len(ratios)))
    for protocol in args.protocols:
        for c in args.concurrency:
            med = {
                n: (
                    statistics.median(r.throughput for r in rows[(n, protocol, c)]),
                    statistics.median(r.p99_ms for r in rows[(n, protocol, c)]),
                )
                for n in names
            }
            cells = [f"{med[n][0]:,.0f} ({med[n][1]:.2f})" for n in names]
            cells += [f"{med['after'][0] / med[n][0]:.2f}" for n in names if n != "after"]
            print(f"| {protocol} | {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
