"""Fuzz a real ``kernel serve`` over its wire for N minutes, then run the property tests long.

    python bench/fuzz.py --target http --minutes 3
    python bench/fuzz.py --target grpc --minutes 3

Phase 1 starts ``kernel serve`` (a subprocess on free loopback ports, the kernel's test backends,
explicit model control) and sends it mutated requests from a few worker threads: for ``http``
raw HTTP/1.1 bytes (request lines, headers, framing, chunking, pipelining, slow sends; JSON and
binary v2 bodies), for ``grpc`` raw HTTP/2 frames (hyperframe/hpack) carrying mutated gRPC
messages, plus frames a conforming client never sends. A good request every few cases checks the
server still answers; a side thread holds slow-loris connections (partial headers) and checks the
server closes them. Resident memory is sampled every few seconds.

Phase 2 runs the in-process property-test files for the target with ``KERNEL_FUZZ_EXAMPLES``
large (a file that does not exist yet is skipped with a note).

Reported: crashes (the server died; an unexpected 5xx / INTERNAL / UNKNOWN for a client's
request), hangs (no answer or close within the timeout), slow clients never closed, memory
(first sample after warm-up against the last), property-test failures, and every distinct bad
answer with the bytes that caused it. Exit code 1 on any crash, hang or failure.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fuzz_grpc
import _fuzz_http
from _harness import Server, dump, machine, rss_growth, start_server

ROOT = Path(__file__).resolve().parent.parent
PROPERTY_FILES = {
    "http": ["tests/test_fuzz_http1.py", "tests/test_fuzz_wire_http.py"],
    "grpc": ["tests/test_fuzz_h2.py", "tests/test_fuzz_wire_grpc.py"],
}
_SHM_OPEN = "Unable to open shared memory region: '"
# INTERNAL is what gRPC servers (grpc C++ in Triton, grpc-go) answer for a broken message frame
# (cut by the end of the stream, compressed without an encoding, not inflating) and for bytes that
# are not a message of the method's type: the gRPC convention. The latter is accepted only when
# protobuf's own parser also refuses the bytes (or they were mutated on the wire).
_GRPC_FRAMING = re.compile(
    r"Failed to decompress|the request stream ended inside a message|.*compress", re.IGNORECASE
)
_GRPC_PARSE = "Failed to parse the request message"
# gRPC codes that mean the server failed, not the client: UNKNOWN, INTERNAL, DATA_LOSS.
_GRPC_FAULTS = {"2", "13", "15"}


@dataclass
class Report:
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    crashes: int = 0
    hangs: int = 0
    faults: int = 0
    liveness_failures: int = 0
    harness_errors: int = 0
    slow_clients: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finding(self, kind: str, signature: str, detail: dict[str, Any]) -> None:
        with self.lock:
            key = f"{kind}: {signature}"
            entry = self.findings.setdefault(key, {"count": 0, **detail})
            entry["count"] += 1


def _signature(text: str) -> str:
    """A message with its numbers and quoted values blanked, to group alike answers."""
    text = re.sub(r"'[^']*'", "'…'", text)
    return re.sub(r"\d+", "N", text)[:160]


def _preview(data: bytes, limit: int = 600) -> str:
    return repr(data[:limit]) + (f" … ({len(data)} bytes)" if len(data) > limit else "")


# -- one case per target ---------------------------------------------------------------------------


def http_case(server: Server, rng: random.Random, report: Report) -> None:
    data, label = _fuzz_http.build_case(rng)
    slow = rng.random() < 0.03
    outcome = _fuzz_http.exchange(server.http_port, data, slow=slow, rng=rng)
    with report.lock:
        report.cases += 1
        report.labels[label.split("+")[0]] += 1
        for status, _ in outcome.answers:
            report.statuses[str(status)] += 1
        report.outcomes["hung" if outcome.hung else "closed" if outcome.closed else "answered"] += 1
    if outcome.hung:
        report.hangs += 1
        report.finding("hang", label, {"request": _preview(data)})
    if not outcome.answers and (label == "valid" or "pipelined-after-good" in label):
        report.faults += 1
        report.finding("good request not answered", label, {"request": _preview(data)})
    if outcome.malformed and b"HEAD " not in data:  # the parser cannot know a HEAD has no body
        report.faults += 1
        report.finding("malformed answer", outcome.malformed, {"request": _preview(data)})
    for status, body in outcome.answers:
        if status >= 500 and status not in (501, 503):
            text = body.decode(errors="replace")
            if status == 500 and _SHM_OPEN in text:
                continue
            report.faults += 1
            report.finding(
                f"HTTP {status}",
                _signature(text),
                {"request": _preview(data), "answer": text[:400], "label": label},
            )


def grpc_case(server: Server, rng: random.Random, report: Report) -> None:
    data, streams, label, messages = _fuzz_grpc.build_case(rng)
    outcome = _fuzz_grpc.exchange(server.grpc_port, data, streams)
    with report.lock:
        report.cases += 1
        report.labels[label.split("+")[0]] += 1
        for code, _ in outcome.status.values():
            report.statuses[code] += 1
        for code in outcome.reset.values():
            report.statuses[f"rst {code}"] += 1
        if outcome.goaway is not None:
            report.statuses["goaway"] += 1
        report.outcomes[
            "hung"
            if outcome.hung
            else "waited for the client's EOF"
            if outcome.half_closed
            else "closed"
            if outcome.closed
            else "answered"
        ] += 1
    if outcome.hung:
        report.hangs += 1
        report.finding("hang", label, {"request": _preview(data)})
    for sid, (code, message) in outcome.status.items():
        if outcome.http_status.get(sid) == "415":
            continue  # not application/grpc: HTTP 415 as the gRPC spec says (grpc-go sends 13 too)
        if code not in _GRPC_FAULTS or _SHM_OPEN in message:
            continue
        if code == "13" and _GRPC_FRAMING.match(message):
            continue
        sent = messages.get(sid)
        if message.startswith(_GRPC_PARSE) and (sent is None or not _fuzz_grpc.parses(*sent)):
            continue
        report.faults += 1
        detail = {"request": _preview(data), "answer": message[:400], "label": label}
        if sent is not None:
            detail["stream"] = f"{sid}: {sent[0]} message {sent[1]!r}"
        report.finding(f"grpc-status {code}", _signature(message), detail)


# -- liveness and slow clients ---------------------------------------------------------------------


def alive_http(server: Server) -> str:
    body = _fuzz_http.infer_json()
    request = (
        b"POST /v2/models/addsub/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    outcome = _fuzz_http.exchange(server.http_port, request, answer_timeout=10)
    if (
        outcome.answers
        and outcome.answers[0][0] == 200
        and b"[2.0,3.0,4.0,5.0]" in outcome.answers[0][1].replace(b" ", b"")
    ):
        return ""
    return f"good HTTP request not answered right: {outcome}"


def alive_grpc(server: Server) -> str:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = grpcclient.InferInput(name, [4], "FP32")
            tensor.set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
            inputs.append(tensor)
        result = client.infer("addsub", inputs, client_timeout=10)
        if list(result.as_numpy("OUTPUT0")) != [2, 4, 6, 8]:
            return "good gRPC request answered wrong"
        return ""
    except Exception as exc:
        return f"good gRPC request failed: {exc}"
    finally:
        client.close()


def slow_clients(server: Server, stop: threading.Event, report: Report, limit: float) -> None:
    """Hold connections that send a partial request line/header a byte at a time; the server
    must close each within ``limit`` seconds (its header-read timeout)."""
    closed_after: list[float] = []
    never = 0
    port = server.http_port if report.slow_clients.get("target") == "http" else server.grpc_port
    prefix = (
        b"POST /v2/models/addsub/infer HTTP/1.1\r\nHost: x\r\nX-Slow: "
        if report.slow_clients.get("target") == "http"
        else _fuzz_grpc.PREFACE[:10]
    )
    while not stop.is_set():
        socks = []
        for _ in range(4):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(prefix)
                socks.append((s, time.monotonic()))
            except OSError:
                pass
        open_socks = list(socks)
        deadline = time.monotonic() + limit
        while open_socks and time.monotonic() < deadline and not stop.is_set():
            still = []
            for s, began in open_socks:
                try:
                    s.sendall(b"a")
                    s.settimeout(0.01)
                    try:
                        if s.recv(4096) == b"":
                            raise ConnectionResetError
                    except TimeoutError:
                        pass
                    still.append((s, began))
                except OSError:
                    closed_after.append(time.monotonic() - began)
                    s.close()
            open_socks = still
            stop.wait(1.0)
        if not stop.is_set():
            never += len(open_socks)
        for s, _ in open_socks:
            s.close()
    with report.lock:
        report.slow_clients.update(
            {
                "closed_by_server": len(closed_after),
                "closed_after_max_s": round(max(closed_after), 1) if closed_after else None,
                "never_closed_within_limit": never,
                "limit_s": limit,
            }
        )


# -- the run --------------------------------------------------------------------------------------


def wire_phase(args: argparse.Namespace, server: Server, report: Report) -> None:
    case = http_case if args.target == "http" else grpc_case
    alive = alive_http if args.target == "http" else alive_grpc
    stop = threading.Event()
    end = time.monotonic() + args.minutes * 60
    report.slow_clients["target"] = args.target

    def worker(index: int) -> None:
        rng = random.Random(args.seed * 1000 + index)
        n = 0
        while time.monotonic() < end and not stop.is_set():
            if not server.alive():
                stop.set()
                return
            try:
                case(server, rng, report)
            except OSError as exc:  # e.g. reset after the server's GOAWAY: not a finding itself
                report.finding("client error", type(exc).__name__, {"detail": str(exc)})
            except Exception as exc:  # the fuzzer's own bug: fail the run, keep fuzzing
                report.harness_errors += 1
                report.finding("fuzzer error", repr(exc)[:200], {})
            n += 1
            if n % 25 == 0:
                problem = alive(server)
                if problem:
                    report.liveness_failures += 1
                    report.finding("liveness", problem[:120], {})

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.workers)]
    slow = threading.Thread(
        target=slow_clients, args=(server, stop, report, args.slow_limit), daemon=True
    )
    slow.start()
    for t in threads:
        t.start()
    next_sample = 0.0
    last_print = time.monotonic()
    while any(t.is_alive() for t in threads):
        now = time.monotonic()
        if now >= next_sample:
            server.sample()
            next_sample = now + args.sample_secs
        if now - last_print >= 30:
            last_print = now
            rss = server.rss[-1][1] if server.rss else 0
            print(
                f"[{now - server.started:6.0f}s] cases={report.cases} faults={report.faults}"
                f" hangs={report.hangs} rss={rss:.1f} MiB",
                flush=True,
            )
        time.sleep(0.2)
    stop.set()
    slow.join(timeout=args.slow_limit + 10)
    if not server.alive():
        report.crashes += 1
        report.finding("crash", f"exit code {server.proc.returncode}", {"log": server.log_tail()})
    else:
        server.sample()


def property_phase(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in PROPERTY_FILES[args.target]:
        path = ROOT / name
        if not path.exists():
            print(f"note: {name} does not exist yet: skipped", flush=True)
            results[name] = "missing"
            continue
        env = {**os.environ, "KERNEL_FUZZ_EXAMPLES": str(args.examples)}
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "--timeout",
            str(args.property_timeout),
            str(path),
        ]
        print("$", " ".join(command), flush=True)
        began = time.monotonic()
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        print(tail, flush=True)
        results[name] = {
            "exit": proc.returncode,
            "seconds": round(time.monotonic() - began, 1),
            "summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["http", "grpc"], required=True)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--examples", type=int, default=300, help="per property (phase 2)")
    parser.add_argument("--property-timeout", type=int, default=900)
    parser.add_argument("--no-properties", action="store_true")
    parser.add_argument(
        "--slow-limit",
        type=float,
        default=120.0,
        help="seconds a slow client may be held open before it counts as a hang",
    )
    parser.add_argument("--sample-secs", type=float, default=5.0)
    parser.add_argument("--warmup-secs", type=float, default=30.0)
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args()

    print(f"machine: {machine()}; seed {args.seed}", flush=True)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="kernel-fuzz-") as tmp:
        server = start_server(Path(tmp))
        try:
            wire_phase(args, server, report)
        finally:
            code = server.stop()
        log_text = server.log_path.read_text(errors="replace")
        tracebacks = log_text.count("Traceback (most recent call last)")
        first_traceback = log_text[log_text.find("Traceback") :][:1500] if tracebacks else ""
    properties = {} if args.no_properties else property_phase(args)
    memory = rss_growth(server.rss, args.warmup_secs)
    slow_hangs = report.slow_clients.get("never_closed_within_limit", 0)
    property_failures = sum(
        1 for r in properties.values() if isinstance(r, dict) and r["exit"] != 0
    )
    result = {
        "target": args.target,
        "minutes": args.minutes,
        "seed": args.seed,
        "cases": report.cases,
        "outcomes": dict(report.outcomes),
        "answers": dict(report.statuses.most_common()),
        "case_kinds": dict(report.labels.most_common()),
        "crashes": report.crashes,
        "hangs": report.hangs,
        "faults": report.faults,
        "liveness_failures": report.liveness_failures,
        "fuzzer_errors": report.harness_errors,
        "slow_clients": report.slow_clients,
        "memory_mb": memory,
        "rss_samples": len(server.rss),
        "rss_over_time": [
            (round(t), round(mb, 1)) for t, mb in server.rss[:: max(1, len(server.rss) // 20)]
        ],
        "server_exit_code": code,
        "server_log_tracebacks": tracebacks,
        "first_traceback": first_traceback,
        "properties": properties,
        "findings": report.findings,
    }
    dump(args.json, result)
    failed = (
        report.crashes
        or report.hangs
        or report.faults
        or report.liveness_failures
        or report.harness_errors
        or slow_hangs
        or property_failures
        or memory["growth"] > args.max_rss_growth
    )
    print("FAIL" if failed else "PASS", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
