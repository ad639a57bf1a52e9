"""Several checkouts of this repository measured side by side (``--tree LABEL=PATH``): each is run
by this venv's interpreter with the checkout's ``kernel`` and Python plugin first on
``PYTHONPATH``, so one bench script compares a change's before and after in the same minute.

Two ways: a ``kernel serve`` per checkout, all running at once (``start_kernel``), which
bench/cpu_per_request.py, large_cpu.py and perf_trees.py drive with perf_analyzer; or the
calling script itself run once per checkout and round (``compare``), which the in-process path
benches (bench/http_path.py, grpc_path.py, request_path.py) use, optionally under callgrind.
Rounds interleave the checkouts, the order reversed every other round, so no checkout always
runs first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from _harness import free_port
from perf import _serving

T = TypeVar("T")


def trees(specs: list[str]) -> list[tuple[str, Path]]:
    """``LABEL=PATH`` arguments as (label, resolved path)."""
    return [(label, Path(path).resolve()) for label, _, path in (s.partition("=") for s in specs)]


def tree_env(tree: Path) -> dict[str, str]:
    """This process's environment with ``tree``'s kernel and Python plugin first on the path."""
    env = dict(os.environ)
    paths = [str(tree), str(tree / "plugins" / "triton-backend-python" / "src")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def start_kernel(
    tree: Path | None, repo: Path, extra: list[str], profile: Path | None = None
) -> tuple[subprocess.Popen[bytes], int, int]:
    """``kernel serve`` from ``tree`` (None: this venv's) on free ports, once ready: (process,
    HTTP port, gRPC port). ``profile``: run it under cProfile, its stats written there on exit."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    runner = [sys.executable]
    if profile is not None:
        runner += ["-m", "cProfile", "-o", str(profile)]
    command = [
        *runner, "-m", "kernel", "serve", f"--model-repository={repo}",
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", *extra,
    ]  # fmt: skip
    # cwd is the tree: ``-m`` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tree_env(tree) if tree is not None else dict(os.environ),
        cwd=tree,
    )
    return _serving(proc, http, grpc)


def interleaved(items: list[T], round_: int) -> list[T]:
    """``items`` in order on even rounds, reversed on odd ones."""
    return items if round_ % 2 == 0 else items[::-1]


def compare(
    args: argparse.Namespace, per: str, models: list[str] | None = None, options: Sequence[str] = ()
) -> None:
    """Run the calling script once per tree and round (``--requests N --rounds 1`` and
    ``options``), interleaved, each under callgrind with ``--callgrind``; read its ``RESULT
    [MODEL] CPU_US INSTRUCTIONS`` lines and print the medians per tree (and model), with the
    ratio to the first tree."""
    specs = trees(args.tree)
    values: dict[tuple[str, str], list[float]] = {}
    script = Path(sys.argv[0]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for label, tree in interleaved(specs, n):
                command = [sys.executable, str(script)]
                command += ["--requests", str(args.requests), "--rounds", "1", *options]
                if args.callgrind:
                    command = [
                        "valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={tmp}/callgrind.out.%p", *command,
                        "--callgrind-dir", tmp,
                    ]  # fmt: skip
                out = subprocess.run(
                    command, env=tree_env(tree), cwd=tree, check=True, capture_output=True,
                    text=True,
                ).stdout  # fmt: skip
                for line in out.splitlines():
                    if not line.startswith("RESULT"):
                        continue
                    *model, cpu, count = line.split()[1:]
                    name = " ".join(model)
                    value = float(count) if args.callgrind else float(cpu)
                    values.setdefault((label, name), []).append(value)
                    print(f"round {n + 1} {label}{' ' * bool(name)}{name}: {float(cpu):.2f} us,"
                          f" {float(count):,.0f} instructions", file=sys.stderr)  # fmt: skip
    first = specs[0][0]
    what = "instructions" if args.callgrind else "event-loop CPU us"
    print(f"{per}, medians of {args.rounds} interleaved rounds of {args.requests}")
    print()
    if models is None:
        print(f"| tree | {what} | ratio to {first} |")
        print("|---|---|---|")
    else:
        print(f"| model | tree | {what} | ratio to {first} |")
        print("|---|---|---|---|")
    for model in models or [""]:
        base = statistics.median(values[(first, model)])
        for label, _ in specs:
            value = statistics.median(values[(label, model)])
            cells = [model] if models is not None else []
            cells += [label, f"{value:,.1f}", f"{value / base:.3f}"]
            print("| " + " | ".join(cells) + " |")
