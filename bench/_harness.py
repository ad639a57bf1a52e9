"""What bench/fuzz.py and bench/soak.py share: a ``kernel serve`` subprocess on free loopback
ports serving the kernel's test backends (``tests/plugins/kernel-test-backends``, installed by
the test command), and its resident memory over time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _proc import rss_mb
from kernel_test_backends.configs import ADDSUB, REPEAT, STRINGS
from kernel_test_backends.configs import BATCHED as BATCHED_IDENTITY

BATCHED = BATCHED_IDENTITY + "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
SLEEPY = ADDSUB.replace('"addsub"', '"sleep"') + (
    "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
    'parameters { key: "sleep_ms" value { string_value: "200" } }\n'
)
MODELS = {
    "addsub": ADDSUB,
    "batched": BATCHED,
    "strings": STRINGS,
    "repeat": REPEAT,
    "sleepy": SLEEPY,
    "victim": ADDSUB,
}


def write_repository(root: Path) -> Path:
    repo = root / "models"
    for name, config in MODELS.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config)
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``kernel serve`` subprocess; its log goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    repo: Path
    log_path: Path
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, MiB) samples."""
    started: float = field(default_factory=time.monotonic)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> float:
        value = rss_mb(self.proc.pid)
        self.rss.append((time.monotonic() - self.started, value))
        return value

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def start_server(root: Path, extra: list[str] | None = None, timeout: float = 120) -> Server:
    """Serve a fresh repository of test models with explicit model control, all loaded."""
    repo = write_repository(root)
    http, grpc, metrics = free_port(), free_port(), free_port()
    kernel = shutil.which("kernel") or str(Path(sys.executable).parent / "kernel")
    command = [
        kernel,
        "serve",
        f"--model-repository={repo}",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--model-control-mode=explicit",
        "--load-model=*",
        "--exit-timeout-secs=10",
        *(extra or []),
    ]
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    server = Server(proc, http, grpc, repo, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kernel serve exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            url = f"http://{server.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    server.started = time.monotonic()
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError("kernel serve did not become ready")


def rss_growth(samples: list[tuple[float, float]], warmup_secs: float) -> dict[str, float]:
    """First sample after warm-up, last, peak, and the growth from first to last."""
    after = [mb for t, mb in samples if t >= warmup_secs] or [mb for _, mb in samples]
    if not after:
        return {"first_mb": 0.0, "last_mb": 0.0, "peak_mb": 0.0, "growth": 0.0}
    first, last = after[0], after[-1]
    return {
        "first_mb": round(first, 1),
        "last_mb": round(last, 1),
        "peak_mb": round(max(after), 1),
        "growth": round((last - first) / first, 4) if first else 0.0,
    }


def machine() -> str:
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    return f"{cpus} cores, load average {load:.2f} at the start, Python {sys.version.split()[0]}"


def dump(path: str | None, result: dict[str, object]) -> None:
    text = json.dumps(result, indent=2, default=str)
    if path:
        Path(path).write_text(text)
    print(text)
