"""Side-by-side throughput and latency: ``kernel serve`` against Triton, driven by perf_analyzer.

Two Python-backend models, served by both servers from the same repository:

* ``add_sub``: Triton's add/sub example (two FP32[4] inputs, sum and difference), at
  concurrency 1, 4 and 8: the per-request cost;
* ``large``: one FP32[3,128,128] input (196 KB) per sample, its three channel means out, with
  dynamic batching, at concurrency 1, 4 and 16, with the tensors in the request and response
  bodies and again through system shared memory (perf_analyzer's ``--shared-memory=system``):
  the cost of moving a large tensor.

perf_analyzer runs over gRPC and HTTP at each concurrency; the script prints a markdown table
(infer/s, p50 and p99 in ms) and the kernel/Triton throughput ratio of every row.

    python bench/perf.py                       # kernel, and Triton when its tools are there
    python bench/perf.py --models large        # only the large-input rows
    python bench/perf.py --reference DIR       # Triton 2.51 tools (setup-reference.sh) in DIR
    python bench/perf.py --servers kernel      # kernel only
    python bench/perf.py --protocols grpc --concurrency 8 --pa-arg=--streaming  # other modes

    python bench/perf.py --models add_sub --servers kernel --rounds 3 --otlp-sink \
        --variant off= \
        --variant 'triton=--trace-config=triton,file={tmp}/t.json --trace-config=level=TIMESTAMPS' \
        --variant 'otel=--trace-config=mode=opentelemetry --trace-config=level=TIMESTAMPS
                   --trace-config=opentelemetry,url={otlp}'   # the cost of a kernel setting

Each row also gives the server's CPU time per request: the server process's (and its process
tree's) user + system time from ``/proc/<pid>/stat`` over the run, divided by the requests its
statistics API counted in that time. Unlike infer/s it hardly moves when other work loads the
machine. ``--variant LABEL=ARGS`` runs the kernel once per variant with those extra arguments
(``{tmp}``: a scratch folder, ``{otlp}``: the URL of an OTLP/HTTP sink this script runs with
``--otlp-sink``), ``--rounds N`` repeats the variants interleaved, and a last table gives each
variant's median. Servers named with ``--servers`` run beside the variants (``--servers triton
kernel --variant 'nowait=--backend-config=python,answer-wait-us=0'``).

perf_analyzer comes from ``/work/shared/tools/setup-reference.sh`` (its ``run-pa`` wrapper);
pass ``--perf-analyzer`` to use another one. Figures go to bench/RESULTS.md by hand, with the
machine and the date.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _harness import free_port
from _proc import rss_mb, split_cpu_seconds

MODEL_PY = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, "OUTPUT0")["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", (a + b).astype(self.dtype)),
                pb_utils.Tensor("OUTPUT1", (a - b).astype(self.dtype)),
            ]))
        return responses
"""

CONFIG = """
name: "add_sub"
backend: "python"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


LARGE_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            means = x.mean(axis=(-2, -1), dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", means.astype(np.float32)),
            ]))
        return responses
"""

LARGE_CONFIG = """
name: "large"
backend: "python"
max_batch_size: 16
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3, 128, 128 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { }
"""

MODELS = {"add_sub": (CONFIG, MODEL_PY), "large": (LARGE_CONFIG, LARGE_PY)}
CONCURRENCY = {"add_sub": [1, 4, 8], "large": [1, 4, 16]}
SHARED_MEMORY = {"add_sub": ["none"], "large": ["none", "system"]}


@dataclass(frozen=True, slots=True)
class Row:
    server: str
    protocol: str
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float
    model: str = "add_sub"
    shared_memory: str = "none"
    cpu_us: float = 0.0
    """Server process CPU time per request (user + system), microseconds."""
    tree_cpu_us: float = 0.0
    """The same for the server's whole process tree (model processes included)."""
    batch: float = 0.0
    """Mean batch size: inferences per model execution, from the statistics API."""


def _wait_ready(http_port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready") as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def _serving(
    proc: subprocess.Popen[bytes], http: int, grpc: int
) -> tuple[subprocess.Popen[bytes], int, int]:
    """(``proc``, its HTTP port, its gRPC port) once it is ready; stopped when it does not get
    ready, so a failed bench leaves no server behind."""
    try:
        _wait_ready(http)
    except BaseException:
        stop([proc])
        raise
    return proc, http, grpc


def _repository(root: Path, models: list[str]) -> Path:
    repo = root / "models"
    for name in models:
        config, code = MODELS[name]
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config)
        (repo / name / "1" / "model.py").write_text(code)
    return repo


def _start(
    server: str, repo: Path, reference: Path | None, extra: list[str]
) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    ports = [f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}"]
    if server == "kernel":
        kernel = shutil.which("kernel") or str(Path(sys.executable).parent / "kernel")
        command = [kernel, "serve", f"--model-repository={repo}", *ports, *extra]
    else:
        assert reference is not None
        command = [str(reference / "run-triton"), f"--model-repository={repo}", *ports]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _serving(proc, http, grpc)


def stop(processes: Iterable[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    """Signal every process, then wait for each (a minute, then SIGKILL)."""
    processes = list(processes)
    for proc in processes:
        proc.send_signal(sig)
    for proc in processes:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _perf(
    pa: str,
    model: str,
    protocol: str,
    port: int,
    concurrency: int,
    shared_memory: str,
    out: Path,
    seconds: int,
    extra: list[str],
    stability: int = 20,
) -> Row:
    if shared_memory != "none":
        extra = [f"--shared-memory={shared_memory}", "--output-shared-memory-size=4096", *extra]
    command = [
        pa, "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
        f"--concurrency-range={concurrency}:{concurrency}",
        f"--measurement-interval={seconds * 1000}", "--max-trials=10", "-s", str(stability),
        "-f", str(out), *extra,
    ]  # fmt: skip
    out.unlink(missing_ok=True)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, timeout=600)
    if done.returncode != 0 or not out.exists():
        # no stable window (a loaded machine): say so in the row rather than lose the run
        nan = float("nan")
        return Row("", protocol, concurrency, nan, nan, nan, model, shared_memory)
    with out.open() as f:
        row = next(csv.DictReader(f))
    return Row(
        "",
        protocol,
        concurrency,
        float(row["Inferences/Second"]),
        float(row["p50 latency"]) / 1000,
        float(row["p99 latency"]) / 1000,
        model,
        shared_memory,
    )


def parse_side_by_side(
    parser: argparse.ArgumentParser,
) -> tuple[argparse.Namespace, Path, str]:
    """The command line of the benches that run perf_analyzer's add_sub rows on servers running
    side by side (bench/perf_trees.py, python_side_by_side.py, python_cpu_per_request.py), with
    the options each adds to ``parser``: (arguments, Triton's tools folder, perf_analyzer)."""
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernel-arg", action="append", default=[])
    args = parser.parse_args()
    return args, *reference_tools(args.reference)


def reference_tools(option: Path | None) -> tuple[Path, str]:
    """Triton's tools folder (``--reference``, else ``$TRITON_REFERENCE``, else
    /work/triton-reference) and its perf_analyzer command."""
    reference = option or Path(os.environ.get("TRITON_REFERENCE", "/work/triton-reference"))
    return reference, str(reference / "run-pa")


def interleaved_rows(
    pa: str,
    servers: dict[str, tuple[subprocess.Popen[bytes], int, int]],
    args: argparse.Namespace,
    out: Path,
    extra: list[str],
) -> dict[tuple[str, str, int], list[Row]]:
    """``args.rounds`` rounds of every add_sub row (``args.protocols`` x ``args.concurrency``),
    each row measured on every server in turn, so a change of the machine's load between
    minutes moves all servers alike: (server, protocol, concurrency) -> a Row per round."""
    rows: dict[tuple[str, str, int], list[Row]] = {}
    for _ in range(args.rounds):
        for protocol in args.protocols:
            for c in args.concurrency:
                for name, (_, http, grpc) in servers.items():
                    port = grpc if protocol == "grpc" else http
                    row = _perf(pa, "add_sub", protocol, port, c, "none", out, args.seconds, extra)
                    rows.setdefault((name, protocol, c), []).append(row)
                    print(name, row, file=sys.stderr)
    return rows


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the server process and of its whole process tree."""
    own, descendants = split_cpu_seconds(pid)
    return own, own + descendants


def _served(http_port: int, model: str) -> tuple[int, int, int]:
    """(requests, inferences, executions) the server's statistics API counted so far for
    ``model``."""
    url = f"http://127.0.0.1:{http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=30) as reply:
        stats = json.loads(reply.read())["model_stats"]
    return (
        sum(int(s["inference_stats"]["success"]["count"]) for s in stats),
        sum(int(s.get("inference_count", 0)) for s in stats),
        sum(int(s.get("execution_count", 0)) for s in stats),
    )


class _OtlpSink:
    """An OTLP/HTTP receiver that takes every export and answers 200 (spans are dropped)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="folder of setup-reference.sh's tools")
    parser.add_argument("--perf-analyzer", help="perf_analyzer command (default: run-pa)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help="default: 1 4 8 (add_sub), 1 4 16 (large)"
    )
    parser.add_argument(
        "--shared-memory",
        nargs="+",
        choices=["none", "system"],
        help="tensor transport; default: none (add_sub), none and system (large)",
    )
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    parser.add_argument("--seconds", type=int, default=3, help="measurement window")
    parser.add_argument("--servers", nargs="+", default=None)
    parser.add_argument(
        "--stability",
        type=int,
        default=20,
        help="perf_analyzer -s: the stability percentage (raise it on a loaded machine)",
    )
    parser.add_argument(
        "--pa-arg",
        action="append",
        default=[],
        help="extra perf_analyzer argument, e.g. --pa-arg=--streaming or --pa-arg=--async",
    )
    parser.add_argument(
        "--kernel-arg",
        action="append",
        default=[],
        help="extra `kernel serve` argument, e.g. --kernel-arg=--backend-config=python,k=v",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="a kernel run with these extra arguments (shell-split; {tmp} and {otlp} filled in)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the servers, interleaved")
    parser.add_argument("--otlp-sink", action="store_true", help="run an OTLP/HTTP sink")
    args = parser.parse_args()
    default_reference = next(
        (p for p in (Path("/tmp/triton-reference"), Path("/work/triton-reference")) if p.exists()),
        Path("/tmp/triton-reference"),
    )
    reference = args.reference or Path(os.environ.get("TRITON_REFERENCE", default_reference))
    pa = args.perf_analyzer or str(reference / "run-pa")
    servers = args.servers or (
        ["kernel", "triton"] if (reference / "run-triton").exists() else ["kernel"]
    )
    rows: list[Row] = []
    memory: dict[str, float] = {}
    sink = _OtlpSink() if args.otlp_sink else None
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), args.models)
        fill = {"tmp": tmp, "otlp": sink.url if sink else ""}
        runs: list[tuple[str, str, list[str]]] = []  # (label, server, extra kernel args)
        for variant in args.variant:
            label, _, text = variant.partition("=")
            extra = [a.format(**fill) for a in shlex.split(text)]
            runs.append((label, "kernel", [*args.kernel_arg, *extra]))
        if not runs or args.servers:
            # Named servers (--servers) run beside the variants, interleaved with them.
            runs = [(server, server, args.kernel_arg) for server in servers] + runs
        for _ in range(args.rounds):
            for label, server, extra in runs:
                proc, http, grpc = _start(server, repo, reference, extra)
                try:
                    for model in args.models:
                        for shm in args.shared_memory or SHARED_MEMORY[model]:
                            for protocol in args.protocols:
                                port = grpc if protocol == "grpc" else http
                                for c in args.concurrency or CONCURRENCY[model]:
                                    cpu_before = _cpu(proc.pid)
                                    count_before = _served(http, model)
                                    row = _perf(
                                        pa, model, protocol, port, c, shm,
                                        Path(tmp) / "out.csv", args.seconds, args.pa_arg,
                                        args.stability,
                                    )  # fmt: skip
                                    cpu_after = _cpu(proc.pid)
                                    after = _served(http, model)
                                    count = max(after[0] - count_before[0], 1)
                                    runs_ = max(after[2] - count_before[2], 1)
                                    rows.append(
                                        replace(
                                            row,
                                            server=label,
                                            cpu_us=(cpu_after[0] - cpu_before[0]) / count * 1e6,
                                            tree_cpu_us=(cpu_after[1] - cpu_before[1])
                                            / count
                                            * 1e6,
                                            batch=(after[1] - count_before[1]) / runs_,
                                        )
                                    )
                                    print(rows[-1], file=sys.stderr)
                    memory[label] = rss_mb(proc.pid)
                finally:
                    stop([proc])
    for server, mb in memory.items():
        print(f"{server}: {mb:.0f} MB resident after the runs (process tree)")
    print()
    print(
        "| model | shm | server | protocol | concurrency | infer/s | p50 ms | p99 ms |"
        " CPU us/req (tree) | batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.model} | {r.shared_memory} | {r.server} | {r.protocol} | {r.concurrency} |"
            f" {r.throughput:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
            f" {r.cpu_us:.0f} ({r.tree_cpu_us:.0f}) | {r.batch:.2f} |"
        )
    if args.rounds > 1:
        print()
        print(f"Medians of {args.rounds} interleaved rounds:")
        print()
        print(
            "| model | shm | server | protocol | concurrency | infer/s | CPU us/req |"
            " tree CPU us/req | batch |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        groups: dict[tuple[str, str, str, str, int], list[Row]] = {}
        for r in rows:
            groups.setdefault(
                (r.model, r.shared_memory, r.server, r.protocol, r.concurrency), []
            ).append(r)
        for (model, shm, server, protocol, c), group in groups.items():
            print(
                f"| {model} | {shm} | {server} | {protocol} | {c} |"
                f" {statistics.median(r.throughput for r in group):,.0f} |"
                f" {statistics.median(r.cpu_us for r in group):.1f} |"
                f" {statistics.median(r.tree_cpu_us for r in group):.1f} |"
                f" {statistics.median(r.batch for r in group):.2f} |"
            )
    medians: dict[tuple[str, str, str, str, int], float] = {}
    for r in rows:
        key = (r.server, r.model, r.shared_memory, r.protocol, r.concurrency)
        medians[key] = statistics.median(
            o.throughput
            for o in rows
            if (o.server, o.model, o.shared_memory, o.protocol, o.concurrency) == key
        )
    if any(key[0] == "triton" for key in medians):
        print()
        which = "medians of the rounds" if args.rounds > 1 else "one round"
        print(f"Throughput against Triton ({which}):")
        print()
        print("| model | shm | server | protocol | concurrency | x Triton |")
        print("|---|---|---|---|---|---|")
        for (server, model, shm, protocol, c), value in medians.items():
            other = medians.get(("triton", model, shm, protocol, c))
            if server != "triton" and other:
                print(f"| {model} | {shm} | {server} | {protocol} | {c} | {value / other:.2f} |")


if __name__ == "__main__":
    main()
