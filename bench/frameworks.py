"""Framework backends at the framework's own speed: a compute-bound conv net served with dynamic
batching, against the raw framework and the server's transport floor, in one run.

    python bench/frameworks.py                              # every framework, gRPC and HTTP
    python bench/frameworks.py --seconds 2 --frameworks onnx openvino --protocols grpc
    python bench/frameworks.py --frameworks torchscript torch_export --threads 1

For ONNX Runtime, torch (a TorchScript ``model.pt`` and an exported program ``model.pt2``) and
OpenVINO it builds, at run time and from one set of seeded weights, a small conv net (FP32
[3,128,128] in, 10 scores out: three stride-2 3x3 convolutions with ReLU, global average pool,
a linear layer), and measures:

* **raw**: the framework alone, in this process, on batches of 1, 4, 8 and 16, with the thread
  settings the plugin gives it (the same config parameters: none, each framework's default,
  unless ``--threads N`` gives every model the framework's intra-op thread count parameter,
  applied to the raw runs the same way; for torch, the OpenMP wait policy the torch plugin loads
  torch with, by importing it first, so ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` in the
  environment apply to both);
* **served**: ``kernel serve`` with that model under dynamic batching (preferred batch 8), driven
  by perf_analyzer over gRPC and HTTP at ``--concurrency`` (16: enough to fill batches of 8);
  throughput, p50/p99, the mean batch size (from the statistics API) and the server's CPU time
  per inference (from ``/proc``, which survives a loaded machine better than throughput);
* **floor**: the same payload through the same server and protocol to a near-zero-compute
  model of the same backend (the spatial mean of the input), batched the same way;
* **limit**: ``1/(1/raw8 + 1/floor)``: on a small machine the load generator and the transport
  share the cores with the framework, so the served throughput can at best reach this
  co-located limit; the table prints served/limit;
* **per-request floor**: each backend with a trivial model (FP32[4] plus one, no batching) at
  concurrency 1, so a regression in the per-request regime shows too.

perf_analyzer comes from ``/work/shared/tools/setup-reference.sh`` (its ``run-pa`` wrapper;
``--reference DIR`` or ``TRITON_REFERENCE``). Needs the onnx, torch and openvino plugins (and
``onnx``) installed for the frameworks asked for. Figures go to bench/RESULTS.md by hand, with
the machine and the date.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import free_port, machine
from _proc import cpu_seconds

SHAPE = (3, 128, 128)
CLASSES = 10
CHANNELS = (3, 16, 32, 64)
TINY = 4
BATCHES = (1, 4, 8, 16)
PREFERRED = 8
MAX_BATCH = 16

THREAD_PARAMETER = {
    # backend -> its config parameter for the intra-op thread count (Triton's names)
    "onnxruntime": "intra_op_thread_count",
    "pytorch": "INTRA_OP_THREAD_COUNT",
    "openvino": "INFERENCE_NUM_THREADS",
}

FRAMEWORKS = {
    # name -> (backend, model file)
    "onnx": ("onnxruntime", "model.onnx"),
    "torchscript": ("pytorch", "model.pt"),
    "torch_export": ("pytorch", "model.pt2"),
    "openvino": ("openvino", "model.onnx"),
}

BATCHED_CONFIG = """
name: "{name}"
backend: "{backend}"
default_model_filename: "{filename}"
max_batch_size: {max_batch}
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ {out} ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ preferred_batch_size: [ {preferred} ] max_queue_delay_microseconds: 500 }}
{parameters}"""
TINY_CONFIG = """
name: "{name}"
backend: "{backend}"
default_model_filename: "{filename}"
max_batch_size: {max_batch}
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ {tiny} ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ {tiny} ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{parameters}"""


# --- the models, one set of weights for every framework -------------------------------------


def _weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    layers = []
    for cin, cout in itertools.pairwise(CHANNELS):
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        layers.append((w, np.zeros(cout, np.float32)))
    fc = (rng.standard_normal((CLASSES, CHANNELS[-1])) / np.sqrt(CHANNELS[-1])).astype(np.float32)
    layers.append((fc, np.zeros(CLASSES, np.float32)))
    return layers


def _onnx_model(kind: str) -> bytes:
    """``conv``: the conv net; ``floor``: the spatial mean of the input ([B,3]); ``tiny``: x+1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    init: list[Any] = []
    if kind == "tiny":
        x = helper.make_tensor_value_info("INPUT__0", TensorProto.FLOAT, ["batch", TINY])
        y = helper.make_tensor_value_info("OUTPUT__0", TensorProto.FLOAT, ["batch", TINY])
        init.append(numpy_helper.from_array(np.ones(TINY, np.float32), "one"))
        nodes.append(helper.make_node("Add", ["INPUT__0", "one"], ["OUTPUT__0"]))
    else:
        x = helper.make_tensor_value_info("INPUT__0", TensorProto.FLOAT, ["batch", *SHAPE])
        width = CLASSES if kind == "conv" else SHAPE[0]
        y = helper.make_tensor_value_info("OUTPUT__0", TensorProto.FLOAT, ["batch", width])
        current = "INPUT__0"
        if kind == "conv":
            *convs, (fc_w, fc_b) = _weights()
            for i, (w, b) in enumerate(convs):
                init += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
                nodes.append(
                    helper.make_node(
                        "Conv",
                        [current, f"W{i}", f"B{i}"],
                        [f"c{i}"],
                        kernel_shape=[3, 3],
                        strides=[2, 2],
                        pads=[1, 1, 1, 1],
                    )
                )
                nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
                current = f"r{i}"
        nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
        if kind == "conv":
            init += [numpy_helper.from_array(fc_w, "FW"), numpy_helper.from_array(fc_b, "FB")]
            nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
            nodes.append(helper.make_node("Gemm", ["flat", "FW", "FB"], ["OUTPUT__0"], transB=1))
        else:
            nodes.append(helper.make_node("Flatten", ["pooled"], ["OUTPUT__0"]))
    graph = helper.make_graph(nodes, kind, [x], [y], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _torch_module(kind: str) -> Any:
    import torch
    from torch import nn

    class Conv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            *convs, (fc_w, fc_b) = _weights()
            layers: list[nn.Module] = []
            for w, b in convs:
                conv = nn.Conv2d(w.shape[1], w.shape[0], 3, stride=2, padding=1)
                conv.weight.data = torch.from_numpy(w)
                conv.bias.data = torch.from_numpy(b)
                layers += [conv, nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(fc_w.shape[1], fc_w.shape[0])
            self.fc.weight.data = torch.from_numpy(fc_w)
            self.fc.bias.data = torch.from_numpy(fc_b)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x).mean(dim=(2, 3)))

    class Floor(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    class Tiny(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    module = {"conv": Conv, "floor": Floor, "tiny": Tiny}[kind]().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _example(kind: str, batch: int = 2) -> np.ndarray:
    shape = (batch, TINY) if kind == "tiny" else (batch, *SHAPE)
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def _save_torch(kind: str, path: Path, exported: bool) -> None:
    import torch

    module = _torch_module(kind)
    example = torch.from_numpy(_example(kind))
    if exported:
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(module, (example,), dynamic_shapes=[{0: batch}])
        torch.export.save(program, str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated, still served by Triton
            torch.jit.save(torch.jit.trace(module, example), str(path))


def write_repository(root: Path, frameworks: list[str], threads: int | None = None) -> Path:
    """Every framework's conv, floor and tiny models; ``threads``: each model's intra-op thread
    count parameter (else none: the framework's default)."""
    repo = root / "models"
    for fw in frameworks:
        backend, filename = FRAMEWORKS[fw]
        parameters = (
            ""
            if threads is None
            else f'parameters {{ key: "{THREAD_PARAMETER[backend]}"'
            f' value {{ string_value: "{threads}" }} }}\n'
        )
        for kind in ("conv", "floor", "tiny"):
            name = f"{kind}_{fw}"
            folder = repo / name / "1"
            folder.mkdir(parents=True)
            path = folder / filename
            if filename == "model.onnx":
                path.write_bytes(_onnx_model(kind))
            else:
                _save_torch(kind, path, exported=filename.endswith(".pt2"))
            template = TINY_CONFIG if kind == "tiny" else BATCHED_CONFIG
            (repo / name / "config.pbtxt").write_text(
                template.format(
                    name=name,
                    backend=backend,
                    filename=filename,
                    max_batch=MAX_BATCH,
                    dims=", ".join(map(str, SHAPE)),
                    out=CLASSES if kind == "conv" else SHAPE[0],
                    preferred=PREFERRED,
                    tiny=TINY,
                    parameters=parameters,
                )
            )
    return repo


# --- the raw framework -------------------------------------------------------------------------


def _runner(fw: str, model_file: Path, threads: int | None = None) -> Callable[[np.ndarray], Any]:
    """One batch through the framework as the plugin runs it (its settings, no server);
    ``threads``: the intra-op thread count the config's parameter gives the plugin."""
    if fw == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()  # the plugin's, with the config's thread parameter
        if threads is not None:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        return lambda x: session.run(["OUTPUT__0"], {"INPUT__0": x})
    if fw in ("torchscript", "torch_export"):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)  # process-wide, as the plugin sets it
        if fw == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(model_file)).eval()
        else:
            module = torch.export.load(str(model_file)).module()

        def run(x: np.ndarray) -> Any:
            with torch.inference_mode(), torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        return run
    import openvino as ov

    properties: dict[str, Any] = {"ALLOW_AUTO_BATCHING": True}  # the plugin's, batching model
    if threads is not None:
        properties["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = ov.Core().compile_model(str(model_file), "CPU", properties)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x}, share_inputs=True)


@dataclass(slots=True)
class Raw:
    rows_per_s: dict[int, float]
    """Median of five rounds per batch size (one round can lose its cores to other work)."""
    cpu_us_per_row: dict[int, float]
    """This process's CPU time per row (all threads), median of the rounds: survives load."""


def raw_throughput(fw: str, model_file: Path, seconds: float, threads: int | None = None) -> Raw:
    """The framework alone on each batch size: rows per second and CPU time per row."""
    run = _runner(fw, model_file, threads)
    result = Raw({}, {})
    for batch in BATCHES:
        x = _example("conv", batch)
        for _ in range(3):
            run(x)
        rounds, cpu = [], []
        for _ in range(5):
            count, start, start_cpu = 0, time.perf_counter(), time.process_time()
            deadline = start + seconds / 5
            while count < 2_000:
                run(x)
                count += 1
                if time.perf_counter() >= deadline and count >= 3:
                    break
            rounds.append(count * batch / (time.perf_counter() - start))
            cpu.append((time.process_time() - start_cpu) / (count * batch) * 1e6)
        result.rows_per_s[batch] = statistics.median(rounds)
        result.cpu_us_per_row[batch] = statistics.median(cpu)
    return result


# --- the server --------------------------------------------------------------------------------


@dataclass(slots=True)
class Served:
    framework: str
    model: str
    protocol: str
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    cpu_us: float
    """Server process CPU time (user + system) per inference over the perf_analyzer run."""
    stable: bool = True
    """False: perf_analyzer found no stable window; throughput is the run's average."""


def _stats(http: int, model: str) -> tuple[int, int]:
    url = f"http://127.0.0.1:{http}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=30) as r:
        stats = json.load(r)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def start_server(
    repo: Path, log: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    kernel = str(Path(sys.executable).parent / "kernel")
    command = [
        kernel, "serve", f"--model-repository={repo}", f"--http-port={http}",
        f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--strict-readiness=false", *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kernel serve exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready") as r:
                if r.status == 200:
                    return proc, http, grpc
        except OSError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("kernel serve did not become ready")


def unavailable(http: int) -> dict[str, str]:
    """The models that did not load, with the reason (the repository index)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http}/v2/repository/index", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        index = json.load(r)
    return {m["name"]: m.get("reason", "") for m in index if m.get("state") != "READY"}


def perf(
    pa: str,
    proc: subprocess.Popen[bytes],
    ports: tuple[int, int],
    fw: str,
    model: str,
    protocol: str,
    concurrency: int,
    seconds: float,
    stability: int,
    out: Path,
) -> Served:
    http, grpc = ports
    port = grpc if protocol == "grpc" else http
    before_stats, before_cpu = _stats(http, model), cpu_seconds(proc.pid)
    began = time.monotonic()
    out.unlink(missing_ok=True)
    command = [
        pa, "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
        f"--concurrency-range={concurrency}:{concurrency}",
        f"--measurement-interval={int(seconds * 1000)}", "--max-trials=6", "-s", str(stability),
        "-f", str(out),
    ]  # fmt: skip
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    cpu = cpu_seconds(proc.pid) - before_cpu
    elapsed = time.monotonic() - began
    after_stats = _stats(http, model)
    inferences = after_stats[0] - before_stats[0]
    executions = after_stats[1] - before_stats[1]
    nan = float("nan")
    try:
        with out.open() as f:
            row = next(csv.DictReader(f))
        throughput = float(row["Inferences/Second"])
        p50, p99 = float(row["p50 latency"]) / 1000, float(row["p99 latency"]) / 1000
    except (OSError, StopIteration, KeyError, ValueError):
        # perf_analyzer found no stable window (a loaded machine): the whole run's average,
        # warm-up included, from the server's own count; no latencies.
        throughput, p50, p99 = inferences / elapsed, nan, nan
    return Served(
        fw,
        model,
        protocol,
        concurrency,
        throughput,
        p50,
        p99,
        inferences / executions if executions else nan,
        cpu / inferences * 1e6 if inferences else nan,
        p50 == p50,
    )


# --- the report --------------------------------------------------------------------------------


def limit(raw8: float, floor: float) -> float:
    """The co-located limit: framework and transport taking turns on the same cores."""
    return 1 / (1 / raw8 + 1 / floor)


def report(raws: dict[str, Raw], served: list[Served]) -> str:
    raw = {fw: r.rows_per_s for fw, r in raws.items()}
    lines = ["### Raw framework (rows/s, CPU us/row; this process, plugin thread settings)", ""]
    lines.append("| framework | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    lines.append("|---|" + "---|" * len(BATCHES))
    for fw, r in raws.items():
        cells = [f"{r.rows_per_s[b]:,.0f} ({r.cpu_us_per_row[b]:,.0f} us)" for b in BATCHES]
        lines.append(f"| {fw} | " + " | ".join(cells) + " |")
    lines += ["", "### Served (perf_analyzer; ~: no stable window, the run's average)", ""]
    lines.append(
        "| framework | model | protocol | c | infer/s | p50 ms | p99 ms | mean batch |"
        " server CPU us/infer |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for s in served:
        lines.append(
            f"| {s.framework} | {s.model} | {s.protocol} | {s.concurrency} |"
            f" {'' if s.stable else '~'}{s.throughput:,.0f} |"
            f" {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.mean_batch:.2f} | {s.cpu_us:,.0f} |"
        )
    lines += [
        "",
        "### Served against the co-located limit 1/(1/raw8 + 1/floor)",
        "",
        "The CPU columns survive a loaded machine: the server's CPU per inference of the conv"
        " net, less that of the floor model (the transport), against the framework's own CPU"
        " per row at batch 8; 'extra' is what serving adds beyond both (ideally about 0).",
        "",
    ]
    lines.append(
        "| framework | protocol | raw8 | floor | limit | served | served/limit |"
        " conv-floor CPU us | raw8 CPU us | extra |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    by_key = {(s.framework, s.model.split("_", 1)[0], s.protocol): s for s in served}
    for fw in raw:
        for protocol in sorted({s.protocol for s in served}):
            conv = by_key.get((fw, "conv", protocol))
            floor = by_key.get((fw, "floor", protocol))
            if conv is None or floor is None:
                continue
            lim = limit(raw[fw][PREFERRED], floor.throughput)
            framework_cpu = conv.cpu_us - floor.cpu_us
            raw_cpu = raws[fw].cpu_us_per_row[PREFERRED]
            lines.append(
                f"| {fw} | {protocol} | {raw[fw][PREFERRED]:,.0f} | {floor.throughput:,.0f} |"
                f" {lim:,.0f} | {conv.throughput:,.0f} | {conv.throughput / lim:.2f} |"
                f" {framework_cpu:,.0f} | {raw_cpu:,.0f} | {framework_cpu - raw_cpu:+,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), default=None)
    parser.add_argument("--protocols", nargs="+", choices=["grpc", "http"], default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer window")
    parser.add_argument(
        "--stability", type=int, default=40, help="perf_analyzer -s: stability percentage"
    )
    parser.add_argument("--raw-seconds", type=float, default=1.0, help="per raw batch size")
    parser.add_argument(
        "--threads",
        type=int,
        help="every model's intra-op thread count parameter, raw runs alike (default: none)",
    )
    parser.add_argument("--reference", type=Path, help="folder of setup-reference.sh's tools")
    parser.add_argument("--perf-analyzer", help="perf_analyzer command (default: run-pa)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--kernel-arg", action="append", default=[], help="extra `kernel serve` argument"
    )
    args = parser.parse_args()
    frameworks = args.frameworks or list(FRAMEWORKS)
    protocols = args.protocols or ["grpc", "http"]
    reference = args.reference or Path(os.environ.get("TRITON_REFERENCE", "/work/triton-reference"))
    pa = args.perf_analyzer or str(reference / "run-pa")
    started = time.monotonic()
    print(f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", file=sys.stderr)
    if any(FRAMEWORKS[fw][0] == "pytorch" for fw in frameworks):
        # torch loaded as the plugin loads it in the server (idle OpenMP threads sleeping),
        # before anything here imports torch: raw and served then wait alike.
        import triton_backend_torch  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repository(Path(tmp), frameworks, args.threads)
        raw: dict[str, Raw] = {}
        for fw in frameworks:
            raw[fw] = raw_throughput(
                fw, repo / f"conv_{fw}" / "1" / FRAMEWORKS[fw][1], args.raw_seconds, args.threads
            )
            print(f"raw {fw}: {raw[fw]}", file=sys.stderr)
        proc, http, grpc = start_server(repo, Path(tmp) / "server.log", args.kernel_arg)
        served: list[Served] = []
        try:
            failed = unavailable(http)
            for name, reason in failed.items():
                print(f"{name} is not served: {reason}", file=sys.stderr)
            frameworks = [f for f in frameworks if f"conv_{f}" not in failed]
            for fw in frameworks:
                for protocol in protocols:
                    for kind, c in (("conv", args.concurrency), ("floor", args.concurrency),
                                    ("tiny", 1)):  # fmt: skip
                        row = perf(pa, proc, (http, grpc), fw, f"{kind}_{fw}", protocol, c,
                                   args.seconds, args.stability, Path(tmp) / "out.csv")  # fmt: skip
                        served.append(row)
                        print(row, file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"# {machine()}; took {time.monotonic() - started:.0f} s")
    print(report(raw, served))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "raw": {fw: asdict(r) for fw, r in raw.items()},
                    "served": [asdict(s) for s in served],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
