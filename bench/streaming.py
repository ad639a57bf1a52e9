"""Token streaming: time to first token and tokens/s for N concurrent streams, three ways.

The same decoupled Python model (``plugins/triton-frontend-openai/tests/models/openai_echo``:
one response per token, a thread per request, optionally ``--delay-ms`` before each token as a
model's own pace) is served by one ``kernel serve`` subprocess and streamed through

* ``openai``: ``POST /v1/completions`` with ``stream: true`` on the OpenAI frontend (SSE);
* ``generate``: ``POST /v2/models/openai_echo/generate_stream`` (Triton's generate extension, SSE);
* ``grpc``: ``ModelStreamInfer`` with ``tritonclient.grpc.aio`` (one bidirectional stream per
  client worker).

N workers run at once; each sends ``--requests`` streams one after another (keep-alive
connection, or one gRPC stream), every stream asking for ``--tokens`` tokens. Per
(path, N): time to first token (request sent -> first token received, p50 and p95), each stream's
token rate after its first token (median), the aggregate tokens/s over the run, and the server's
CPU time per token (the ``kernel serve`` process and its model process, from /proc: the figure
that survives a loaded machine). The SSE paths use the same small asyncio HTTP/1.1 client, so
their client cost is equal; the gRPC path uses the real ``tritonclient`` (heavier per message).
Paths run interleaved, ``--rounds`` times; each figure is the median over rounds.

With ``--reference DIR`` (``/work/triton-reference``), Triton 2.51 serves the same model too
(its ``run-triton``): its generate_stream and gRPC streaming are measured interleaved with the
kernel's (Triton 2.51 has no OpenAI frontend for Python-backend models).

    python bench/streaming.py [--streams 1,4,16] [--tokens 64] [--requests 8] [--delay-ms 0]
                              [--rounds 3] [--paths openai,generate,grpc] [--reference DIR]
                              [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _harness import free_port, machine
from _proc import tree_cpu_seconds

MODEL = (
    Path(__file__).resolve().parents[1] / "plugins/triton-frontend-openai/tests/models/openai_echo"
)
PROMPT = "the quick brown fox jumps over the lazy dog"


class Server:
    """A server subprocess serving ``openai_echo``; ``openai`` is None where it has no such
    frontend (Triton)."""

    name = "kernel"

    def __init__(self, root: Path, command: list[str], ready_port: int) -> None:
        self.log = root / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited:\n{self.log.read_text()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{ready_port}/v2/models/openai_echo/ready"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{command[0]} did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _repository(root: Path) -> Path:
    repo = root / "models"
    shutil.copytree(MODEL, repo / "openai_echo")
    return repo


class KernelServer(Server):
    name = "kernel"

    def __init__(self, root: Path, mode: str) -> None:
        self.http, self.grpc, self.openai = free_port(), free_port(), free_port()
        kernel = shutil.which("kernel") or str(Path(sys.executable).parent / "kernel")
        command = [
            kernel,
            "serve",
            f"--model-repository={_repository(root)}",
            "--host=127.0.0.1",
            f"--http-port={self.http}",
            f"--grpc-port={self.grpc}",
            f"--openai-port={self.openai}",
            "--allow-metrics=false",
            f"--backend-config=python,execution-mode={mode}",
        ]
        super().__init__(root, command, self.http)


class TritonServer(Server):
    """Triton 2.51 (``run-triton`` of the reference build): generate_stream and gRPC only."""

    name = "triton"

    def __init__(self, root: Path, reference: Path) -> None:
        self.http, self.grpc, self.openai = free_port(), free_port(), None
        command = [
            str(reference / "run-triton"),
            f"--model-repository={_repository(root)}",
            f"--http-port={self.http}",
            f"--grpc-port={self.grpc}",
            "--allow-metrics=false",
        ]
        super().__init__(root, command, self.http)


# -- one stream per path: returns (first token delay, token arrival times) -------------------

Stream = tuple[float, list[float]]


class SseClient:
    """A keep-alive HTTP/1.1 connection reading chunked SSE replies (the two SSE paths)."""

    def __init__(self, port: int, path: str, tokens: Callable[[dict[str, Any]], int]) -> None:
        self.port, self.path, self.tokens = port, path, tokens
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def stream(self, body: dict[str, Any]) -> Stream:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        data = orjson.dumps(body)
        start = time.perf_counter()
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.path.encode(), len(data), data)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            detail = await reader.readexactly(length) if length else b""
            raise RuntimeError(f"{self.path}: {(head + detail).decode(errors='replace')}")
        arrivals: list[float] = []
        first = 0.0
        pending = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            pending += (await reader.readexactly(size + 2))[:-2]
            *events, pending = pending.split(b"\n\n")
            now = time.perf_counter()
            for event in events:
                payload = event.removeprefix(b"data: ")
                if payload == b"[DONE]":
                    continue
                count = self.tokens(orjson.loads(payload))
                if count:
                    if not arrivals:
                        first = now - start
                    arrivals.extend([now] * count)
        return first, arrivals

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _openai_tokens(event: dict[str, Any]) -> int:
    if "error" in event:
        raise RuntimeError(event["error"])
    choices = event.get("choices") or [{}]
    return 1 if choices[0].get("text") else 0


def _generate_tokens(event: dict[str, Any]) -> int:
    if "error" in event:
        raise RuntimeError(event["error"])
    text = event.get("text_output")
    return 1 if text else 0


class GrpcClient:
    """One ModelStreamInfer stream (tritonclient.grpc.aio), requests sent one at a time."""

    def __init__(self, port: int) -> None:
        import tritonclient.grpc.aio as grpcclient

        self.module = grpcclient
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.responses: Any = None

    async def _requests(self) -> Any:
        while (item := await self.queue.get()) is not None:
            yield item

    async def stream(self, body: dict[str, Any]) -> Stream:
        if self.responses is None:
            self.responses = self.client.stream_infer(self._requests()).__aiter__()
        text = self.module.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([body["prompt"].encode()], dtype=np.object_))
        parameters = {k: v for k, v in body.items() if k not in ("prompt", "model", "stream")}
        start = time.perf_counter()
        await self.queue.put(
            {"model_name": "openai_echo", "inputs": [text], "parameters": parameters}
        )
        arrivals: list[float] = []
        first = 0.0
        while True:
            result, error = await self.responses.__anext__()
            now = time.perf_counter()
            if error is not None:
                raise RuntimeError(str(error))
            out = result.as_numpy("text_output")
            if out is not None and out.size:
                if not arrivals:
                    first = now - start
                arrivals.append(now)
            # The stream's end: tritonclient.grpc.aio cannot ask for Triton's empty final
            # response, and the model sends exactly max_tokens tokens (its last response, usage
            # counts without text, is skipped at the next stream's start).
            if len(arrivals) == body["max_tokens"]:
                break
        return first, arrivals

    async def close(self) -> None:
        await self.queue.put(None)
        await self.client.close()


def make_client(path: str, server: Server) -> SseClient | GrpcClient:
    if path == "openai":
        assert server.openai is not None
        return SseClient(server.openai, "/v1/completions", _openai_tokens)
    if path == "generate":
        return SseClient(server.http, "/v2/models/openai_echo/generate_stream", _generate_tokens)
    return GrpcClient(server.grpc)


def request_body(path: str, tokens: int, delay_ms: float) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": tokens, "delay_ms": delay_ms}
    if path == "openai":
        return {"model": "openai_echo", "prompt": PROMPT, "stream": True, **body}
    if path == "generate":
        return {"text_input": PROMPT, **body}
    return {"prompt": PROMPT, **body}


async def run(
    path: str, server: Server, streams: int, requests: int, tokens: int, delay_ms: float
) -> dict[str, float]:
    body = request_body(path, tokens, delay_ms)
    clients = [make_client(path, server) for _ in range(streams)]
    results: list[Stream] = []
    try:
        await clients[0].stream(body)  # warm: connections, the model's first request

        async def worker(client: SseClient | GrpcClient) -> None:
            for _ in range(requests):
                results.append(await client.stream(body))

        cpu = tree_cpu_seconds(server.proc.pid)
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in clients)), 600)
        wall = time.perf_counter() - started
        cpu = tree_cpu_seconds(server.proc.pid) - cpu
    finally:
        for client in clients:
            await client.close()
    ttfts = sorted(first for first, _ in results)
    total = sum(len(arrivals) for _, arrivals in results)
    if total != streams * requests * tokens:
        raise RuntimeError(f"{path}: {total} tokens, expected {streams * requests * tokens}")
    rates = [(len(a) - 1) / (a[-1] - a[0]) for _, a in results if len(a) > 1 and a[-1] > a[0]]
    return {
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p95_ms": ttfts[max(0, math.ceil(0.95 * len(ttfts)) - 1)] * 1000,
        "stream_tokens_per_s": statistics.median(rates) if rates else float("nan"),
        "tokens_per_s": total / wall,
        "server_cpu_us_per_token": cpu / total * 1e6,
    }


def generate_available(server: Server) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http}/v2/models/openai_echo/generate_stream",
        data=json.dumps({"text_input": "a", "max_tokens": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status == 200 and b"text_output" in reply.read()
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,4,16")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8, help="streams per worker")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the model's pace per token")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default="openai,generate,grpc")
    parser.add_argument("--mode", default="process", choices=("process", "in_process"))
    parser.add_argument(
        "--reference",
        default=None,
        metavar="DIR",
        help="also Triton 2.51 from DIR/run-triton (generate_stream and gRPC), interleaved",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    print(
        f"# {machine()}; {args.tokens} tokens/stream, {args.requests} streams per worker,"
        f" model delay {args.delay_ms} ms/token, Python model {args.mode}"
    )
    with contextlib.ExitStack() as stack:
        servers: list[Server] = []
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        servers.append(KernelServer(tmp / "kernel", args.mode))
        stack.callback(servers[0].stop)
        if args.reference:
            servers.append(TritonServer(tmp / "triton", Path(args.reference)))
            stack.callback(servers[1].stop)
        runs: list[tuple[Server, str]] = []
        for server in servers:
            for path in args.paths.split(","):
                if path == "openai" and server.openai is None:
                    continue
                if path == "generate" and not generate_available(server):
                    print(f"# generate_stream is not served by {server.name}: skipped")
                    continue
                runs.append((server, path))
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        try:
            for round_ in range(args.rounds):
                for n in counts:
                    for server, path in runs:
                        result = asyncio.run(
                            run(path, server, n, args.requests, args.tokens, args.delay_ms)
                        )
                        samples.setdefault((f"{server.name} {path}", n), []).append(result)
                print(f"# round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        except BaseException:
            for server in servers:
                tail = server.log.read_text(errors="replace").splitlines()[-40:]
                print(f"# {server.name} log:", *tail, sep="\n", file=sys.stderr)
            raise
    table: list[dict[str, Any]] = []
    print(
        "| path | streams | TTFT p50 (ms) | TTFT p95 (ms) | tokens/s per stream |"
        " tokens/s total | server CPU us/token |"
    )
    print("|---|---|---|---|---|---|---|")
    for (path, n), results in samples.items():
        row = {k: statistics.median(r[k] for r in results) for k in results[0]}
        table.append({"path": path, "streams": n, **row})
        print(
            f"| {path} | {n} | {row['ttft_p50_ms']:.1f} | {row['ttft_p95_ms']:.1f} |"
            f" {row['stream_tokens_per_s']:,.0f} | {row['tokens_per_s']:,.0f} |"
            f" {row['server_cpu_us_per_token']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": table}, indent=2))


if __name__ == "__main__":
    main()
