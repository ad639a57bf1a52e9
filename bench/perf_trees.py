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
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import Row, _free_port, _perf, _repository, _wait_ready


def _start_tree(
    tree: Path | None, repo: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    env = dict(os.environ)
    if tree is not None:
        paths = [str(tree), str(tree / "plugins" / "triton-backend-python" / "src")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    command = [
        sys.executable, "-m", "kernel", "serve", f"--model-repository={repo}",
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", *extra,
    ]  # fmt: skip
    # ``-m`` puts the working directory first on sys.path, before PYTHONPATH: run in the tree
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tree
    )
    _wait_ready(http)
    return proc, http, grpc


def _start_triton(reference: Path, repo: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    command = [
        str(reference / "run-triton"), f"--model-repository={repo}",
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ready(http)
    return proc, http, grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernel-arg", action="append", default=[])
    args = parser.parse_args()
    reference = args.reference or Path(os.environ.get("TRITON_REFERENCE", "/work/triton-reference"))
    pa = str(reference / "run-pa")
    extra = ["--stability-percentage=999"]  # take perf_analyzer's windows as they come
    rows: dict[tuple[str, str, int], list[Row]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
        servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        try:
            for spec in args.tree:
                label, _, path = spec.partition("=")
                servers[label] = _start_tree(Path(path).resolve(), repo, args.kernel_arg)
            servers["after"] = _start_tree(None, repo, args.kernel_arg)
            if not args.no_triton and (reference / "run-triton").exists():
                servers["triton"] = _start_triton(reference, repo)
            for _ in range(args.rounds):
                for protocol in args.protocols:
                    for c in args.concurrency:
                        for name, (_, http, grpc) in servers.items():
                            port = grpc if protocol == "grpc" else http
                            out = Path(tmp) / "out.csv"
                            row = _perf(
                                pa, "add_sub", protocol, port, c, "none", out, args.seconds, extra
                            )
                            rows.setdefault((name, protocol, c), []).append(row)
                            print(name, row, file=sys.stderr)
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=60)
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
