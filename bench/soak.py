"""Mixed load on one ``kernel serve`` for N minutes: is anything lost, doubled or leaking?

    python bench/soak.py --minutes 10

One ``kernel serve`` subprocess (the kernel's test backends, explicit model control) gets, from
a few client threads (tritonclient, sync): HTTP and gRPC unary inference, gRPC ModelStreamInfer
on a decoupled model (k responses and a final one per request), bad requests interleaved (each
must get a client error), load/unload of one model while the others serve (requests to it during
a reload may be refused, never lost), and clients that disconnect mid-request (HTTP: the socket
closed before the answer; gRPC: a deadline shorter than the model's work).

Every request carries a unique id; the answer must carry the same id. Counted: requests sent,
answered, errors by kind, lost (no answer nor error), answered twice or to the wrong id, and the
server's resident memory every few seconds (growth from the first sample after warm-up to the
last). Exit code 1 when a request was lost, doubled or crossed, an unexpected error happened,
the server died, or memory grew more than ``--max-rss-growth``.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Server, dump, machine, rss_growth, start_server

TIMEOUT = 30.0
WORKERS = ["http", "grpc", "stream", "bad", "reload", "disconnect"]


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    expected_errors: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    lost: int = 0
    doubled: int = 0
    crossed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, counter: str, kind: str, example: str = "") -> None:
        with self.lock:
            getattr(self, counter)[kind] += 1
            if example and counter == "unexpected" and kind not in self.examples:
                self.examples[kind] = example[:300]


def _inputs(module: Any, n: int = 4) -> list[Any]:
    out = []
    for name in ("INPUT0", "INPUT1"):
        tensor = module.InferInput(name, [n], "FP32")
        tensor.set_data_from_numpy(np.arange(n, dtype=np.float32))
        out.append(tensor)
    return out


def _status_kind(exc: InferenceServerException) -> str:
    return str(exc.status() or "none")


class Load:
    def __init__(self, server: Server, tally: Tally, end: float, seed: int, pause: float) -> None:
        self.server = server
        self.pause = pause
        """Seconds each unary/streaming client waits between requests (keeps the load modest)."""
        self.tally = tally
        self.end = end
        self.seed = seed
        self.reloading = threading.Event()
        self.stop = threading.Event()

    def running(self) -> bool:
        return time.monotonic() < self.end and not self.stop.is_set()

    # -- unary -------------------------------------------------------------------------------

    def unary(self, protocol: str, index: int) -> None:
        module: Any = httpclient if protocol == "http" else grpcclient
        url = self.server.http_url if protocol == "http" else self.server.grpc_url
        kwargs = {"network_timeout": TIMEOUT} if protocol == "http" else {}
        client = module.InferenceServerClient(url, **kwargs)
        rng = random.Random(self.seed + index)
        n = 0
        try:
            while self.running():
                n += 1
                rid = f"{protocol}-{index}-{n}"
                model = rng.choice(["addsub", "addsub", "victim"])
                kind = f"{protocol} unary"
                self.tally.add("sent", kind)
                reloading = self.reloading.is_set()
                try:
                    extra = {} if protocol == "http" else {"client_timeout": TIMEOUT}
                    result = client.infer(model, _inputs(module), request_id=rid, **extra)
                except InferenceServerException as exc:
                    text = str(exc)
                    if model == "victim" and (reloading or self.reloading.is_set()):
                        status = _status_kind(exc)
                        self.tally.add("expected_errors", f"{kind}: victim reloading: {status}")
                    elif "Deadline" in text or "timed out" in text.lower():
                        self.tally.lost += 1
                        self.tally.add("unexpected", f"{kind}: no answer", text)
                    else:
                        self.tally.add("unexpected", f"{kind}: {_status_kind(exc)}", text)
                    continue
                except Exception as exc:
                    self.tally.add("unexpected", f"{kind}: {type(exc).__name__}", str(exc))
                    continue
                response = result.get_response()
                got = response["id"] if protocol == "http" else response.id
                output = result.as_numpy("OUTPUT0")
                if got != rid or output is None or list(output) != [0, 2, 4, 6]:
                    self.tally.crossed += 1
                    self.tally.add(
                        "unexpected", f"{kind}: wrong answer", f"{rid} -> {got} {output}"
                    )
                else:
                    self.tally.add("answered", kind)
                time.sleep(self.pause)
        finally:
            client.close()

    # -- streaming ---------------------------------------------------------------------------

    def streaming(self, index: int) -> None:
        kind = "grpc stream"
        rng = random.Random(self.seed + 100 + index)
        answers: queue.Queue[tuple[str, bool, str]] = queue.Queue()

        def callback(result: Any, error: Any) -> None:
            if error is not None:
                answers.put(("", True, str(error)))
                return
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            answers.put((response.id, final, ""))

        client = grpcclient.InferenceServerClient(self.server.grpc_url)
        client.start_stream(callback=callback)
        n = 0
        try:
            while self.running():
                batch = {}
                for _ in range(rng.randint(1, 4)):
                    n += 1
                    rid = f"stream-{index}-{n}"
                    k = rng.randint(0, 5)
                    tensor = grpcclient.InferInput("IN", [k], "INT32")
                    tensor.set_data_from_numpy(np.arange(k, dtype=np.int32))
                    self.tally.add("sent", kind)
                    batch[rid] = {"expect": k, "data": 0, "final": 0}
                    client.async_stream_infer(
                        "repeat", [tensor], request_id=rid, enable_empty_final_response=True
                    )
                deadline = time.monotonic() + TIMEOUT
                while any(v["final"] == 0 for v in batch.values()) and time.monotonic() < deadline:
                    try:
                        rid, final, error = answers.get(timeout=1.0)
                    except queue.Empty:
                        continue
                    if error:
                        self.tally.add("unexpected", f"{kind}: error", error)
                        continue
                    entry = batch.get(rid)
                    if entry is None:
                        self.tally.crossed += 1
                        self.tally.add("unexpected", f"{kind}: unknown id", rid)
                        continue
                    if final:
                        entry["final"] += 1
                    else:
                        entry["data"] += 1
                for rid, entry in batch.items():
                    if entry["final"] == 0:
                        self.tally.lost += 1
                        self.tally.add("unexpected", f"{kind}: no final response", rid)
                    elif entry["final"] > 1 or entry["data"] > entry["expect"]:
                        self.tally.doubled += 1
                        self.tally.add("unexpected", f"{kind}: answered twice", f"{rid} {entry}")
                    elif entry["data"] < entry["expect"]:
                        self.tally.lost += 1
                        self.tally.add("unexpected", f"{kind}: responses missing", f"{rid} {entry}")
                    else:
                        self.tally.add("answered", kind)
                time.sleep(self.pause)
        finally:
            client.stop_stream(cancel_requests=True)
            client.close()

    # -- bad requests ------------------------------------------------------------------------

    def bad(self, index: int) -> None:
        rng = random.Random(self.seed + 200 + index)
        http = httpclient.InferenceServerClient(self.server.http_url, network_timeout=TIMEOUT)
        grpc = grpcclient.InferenceServerClient(self.server.grpc_url)
        try:
            while self.running():
                choice = rng.randrange(5)
                protocol = "http" if choice < 3 else "grpc"
                kind = f"{protocol} bad"
                self.tally.add("sent", kind)
                try:
                    if choice == 0:  # shape the model does not take
                        http.infer("addsub", _inputs(httpclient, 5))
                    elif choice == 1:
                        status, _ = _raw_http(self.server.http_port, b"{not json", "addsub")
                        self._client_status(kind, status)
                        continue
                    elif choice == 2:
                        http.infer("nope", _inputs(httpclient))
                    elif choice == 3:
                        tensor = grpcclient.InferInput("INPUT0", [4], "INT32")
                        tensor.set_data_from_numpy(np.zeros(4, dtype=np.int32))
                        grpc.infer(
                            "addsub", [tensor, _inputs(grpcclient)[1]], client_timeout=TIMEOUT
                        )
                    else:
                        grpc.infer("nope", _inputs(grpcclient), client_timeout=TIMEOUT)
                    self.tally.add("unexpected", f"{kind}: accepted")
                except InferenceServerException as exc:
                    status = _status_kind(exc)
                    code = int(status) if status.isdigit() else 0
                    client_status = (400 <= code < 500) or status in (
                        "StatusCode.INVALID_ARGUMENT",
                        "StatusCode.NOT_FOUND",
                        "StatusCode.UNAVAILABLE",
                    )
                    if client_status:
                        self.tally.add("answered", kind)
                        self.tally.add("expected_errors", f"{kind}: {status}")
                    else:
                        self.tally.add("unexpected", f"{kind}: {status}", str(exc))
                time.sleep(0.01)
        finally:
            http.close()
            grpc.close()

    def _client_status(self, kind: str, status: int) -> None:
        if 400 <= status < 500:
            self.tally.add("answered", kind)
            self.tally.add("expected_errors", f"{kind}: {status}")
        else:
            self.tally.add("unexpected", f"{kind}: {status}")

    # -- reloads and disconnects -------------------------------------------------------------

    def reloads(self) -> None:
        client = httpclient.InferenceServerClient(self.server.http_url, network_timeout=TIMEOUT)
        try:
            while self.running():
                self.stop.wait(4.0)
                if not self.running():
                    break
                self.reloading.set()
                try:
                    self.tally.add("sent", "reload")
                    client.unload_model("victim")
                    client.load_model("victim")
                    self.tally.add("answered", "reload")
                except InferenceServerException as exc:
                    self.tally.add("unexpected", "reload failed", str(exc))
                finally:
                    time.sleep(0.2)  # requests that saw the old state finish
                    self.reloading.clear()
        finally:
            client.close()

    def disconnects(self) -> None:
        rng = random.Random(self.seed + 300)
        grpc = grpcclient.InferenceServerClient(self.server.grpc_url)
        n = 0
        try:
            while self.running():
                n += 1
                if rng.random() < 0.5:
                    kind = "http disconnect"
                    body = json.dumps(
                        {
                            "id": f"disc-{n}",
                            "inputs": [
                                {
                                    "name": "INPUT0",
                                    "datatype": "FP32",
                                    "shape": [4],
                                    "data": [0] * 4,
                                },
                                {
                                    "name": "INPUT1",
                                    "datatype": "FP32",
                                    "shape": [4],
                                    "data": [0] * 4,
                                },
                            ],
                        }
                    ).encode()
                    sock = socket.create_connection(("127.0.0.1", self.server.http_port), timeout=5)
                    sock.sendall(
                        b"POST /v2/models/sleepy/infer HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body
                    )
                    time.sleep(rng.uniform(0.0, 0.1))
                    sock.close()
                    self.tally.add("sent", kind)
                    self.tally.add("answered", kind)  # nothing to wait for: the client left
                else:
                    kind = "grpc deadline"
                    self.tally.add("sent", kind)
                    try:
                        grpc.infer("sleepy", _inputs(grpcclient), client_timeout=0.05)
                        self.tally.add("unexpected", f"{kind}: answered after the deadline")
                    except InferenceServerException as exc:
                        if "Deadline" in str(exc) or "DEADLINE" in str(exc.status()):
                            self.tally.add("answered", kind)
                        else:
                            self.tally.add("unexpected", f"{kind}: {_status_kind(exc)}", str(exc))
                time.sleep(0.3)
        finally:
            grpc.close()


def _raw_http(port: int, body: bytes, model: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (model.encode(), len(body)) + body
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--sample-secs", type=float, default=5.0)
    parser.add_argument(
        "--warmup-secs", type=float, default=None, help="default: a fifth of the run, at least 10 s"
    )
    parser.add_argument("--max-rss-growth", type=float, default=0.05)
    parser.add_argument(
        "--pause-ms", type=float, default=5.0, help="pause between requests of each client thread"
    )
    parser.add_argument("--json", help="write the report here too")
    parser.add_argument(
        "--only", help="comma-separated workers to run (default: all): " + ",".join(WORKERS)
    )
    args = parser.parse_args()
    warmup = args.warmup_secs if args.warmup_secs is not None else max(10.0, args.minutes * 12)

    print(f"machine: {machine()}; seed {args.seed}", flush=True)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="kernel-soak-") as tmp:
        server = start_server(Path(tmp))
        end = time.monotonic() + args.minutes * 60
        load = Load(server, tally, end, args.seed, args.pause_ms / 1000)
        plan = {
            "http": [(load.unary, ("http", 0)), (load.unary, ("http", 1))],
            "grpc": [(load.unary, ("grpc", 0)), (load.unary, ("grpc", 1))],
            "stream": [(load.streaming, (0,))],
            "bad": [(load.bad, (0,))],
            "reload": [(load.reloads, ())],
            "disconnect": [(load.disconnects, ())],
        }
        chosen = args.only.split(",") if args.only else WORKERS
        workers = [
            threading.Thread(target=fn, args=fn_args)
            for name in chosen
            for fn, fn_args in plan[name]
        ]
        for t in workers:
            t.daemon = True
            t.start()
        last_print = time.monotonic()
        while any(t.is_alive() for t in workers):
            if not server.alive():
                load.stop.set()
                break
            server.sample()
            if time.monotonic() - last_print >= 30:
                last_print = time.monotonic()
                print(
                    f"[{time.monotonic() - server.started:6.0f}s] sent={sum(tally.sent.values())}"
                    f" answered={sum(tally.answered.values())} lost={tally.lost}"
                    f" unexpected={sum(tally.unexpected.values())} rss={server.rss[-1][1]:.1f} MiB",
                    flush=True,
                )
            load.stop.wait(args.sample_secs)
        for t in workers:
            t.join(timeout=TIMEOUT + 10)
        died = not server.alive()
        if not died:
            server.sample()
        code = server.stop()
        log_tail = server.log_tail(20) if died else ""
        log_text = server.log_path.read_text(errors="replace")
        tracebacks = log_text.count("Traceback (most recent call last)")

    memory = rss_growth(server.rss, warmup)
    result = {
        "minutes": args.minutes,
        "seed": args.seed,
        "sent": dict(tally.sent),
        "answered": dict(tally.answered),
        "sent_total": sum(tally.sent.values()),
        "answered_total": sum(tally.answered.values()),
        "lost": tally.lost,
        "answered_twice": tally.doubled,
        "wrong_answer": tally.crossed,
        "expected_errors": dict(tally.expected_errors),
        "unexpected_errors": dict(tally.unexpected),
        "unexpected_examples": tally.examples,
        "memory_mb": memory,
        "warmup_secs": warmup,
        "rss_over_time": [
            (round(t), round(mb, 1)) for t, mb in server.rss[:: max(1, len(server.rss) // 20)]
        ],
        "server_log_tracebacks": tracebacks,
        "server_died": died,
        "server_exit_code": code,
        "server_log_tail": log_tail,
    }
    dump(args.json, result)
    failed = (
        died
        or tracebacks
        or tally.lost
        or tally.doubled
        or tally.crossed
        or sum(tally.unexpected.values())
        or memory["growth"] > args.max_rss_growth
    )
    print("FAIL" if failed else "PASS", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
