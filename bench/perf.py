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

perf_analyzer comes from ``/work/shared/tools/setup-reference.sh`` (its ``run-pa`` wrapper);
pass ``--perf-analyzer`` to use another one. Figures go to bench/RESULTS.md by hand, with the
machine and the date.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

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


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Triton's Python stubs count)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, StopIteration):
            continue
    return total / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    ports = [f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}"]
    if server == "kernel":
        kernel = shutil.which("kernel") or str(Path(sys.executable).parent / "kernel")
        command = [kernel, "serve", f"--model-repository={repo}", *ports, *extra]
    else:
        assert reference is not None
        command = [str(reference / "run-triton"), f"--model-repository={repo}", *ports]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ready(http)
    return proc, http, grpc


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
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), args.models)
        for server in servers:
            proc, http, grpc = _start(server, repo, reference, args.kernel_arg)
            try:
                for model in args.models:
                    for shm in args.shared_memory or SHARED_MEMORY[model]:
                        for protocol in args.protocols:
                            port = grpc if protocol == "grpc" else http
                            for c in args.concurrency or CONCURRENCY[model]:
                                row = _perf(
                                    pa, model, protocol, port, c, shm, Path(tmp) / "out.csv",
                                    args.seconds, args.pa_arg, args.stability,
                                )  # fmt: skip
                                rows.append(replace(row, server=server))
                                print(rows[-1], file=sys.stderr)
                memory[server] = _tree_rss_mb(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    for server, mb in memory.items():
        print(f"{server}: {mb:.0f} MB resident after the runs (process tree)")
    print()
    print("| model | shm | server | protocol | concurrency | infer/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.model} | {r.shared_memory} | {r.server} | {r.protocol} | {r.concurrency} |"
            f" {r.throughput:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
        )
    by_key = {(r.server, r.model, r.shared_memory, r.protocol, r.concurrency): r for r in rows}
    if "kernel" in servers and "triton" in servers:
        print()
        print("| model | shm | protocol | concurrency | kernel/Triton |")
        print("|---|---|---|---|---|")
        for r in rows:
            if r.server != "kernel":
                continue
            other = by_key.get(("triton", r.model, r.shared_memory, r.protocol, r.concurrency))
            if other is not None:
                print(
                    f"| {r.model} | {r.shared_memory} | {r.protocol} | {r.concurrency} |"
                    f" {r.throughput / other.throughput:.2f} |"
                )


if __name__ == "__main__":
    main()
