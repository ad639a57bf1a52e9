"""Three ``kernel serve`` replicas behind a real nginx, restarted one at a time under load.

A rolling update as Kubernetes does it: each replica in turn gets SIGTERM, drains and exits 0,
starts again and becomes ready, while tritonclient drives nginx (``proxy_pass`` over HTTP,
``grpc_pass`` over gRPC, unary calls and a decoupled model over ``ModelStreamInfer``). No unary
request may fail or come back wrong: nginx sends what a stopping replica refuses (connection
refused, HTTP 503) to another one (``tests/interop/nginx-replicas.conf.template``; the settings
are explained in ``docs/deploy-proxy.md``).

A gRPC stream is pinned to one replica for its life, and no proxy can move it. The contract
tested here: a replica that stops answers every stream request it accepted, in full, then ends
the stream with ``UNAVAILABLE``; a request it refuses meanwhile gets an in-stream
``UNAVAILABLE`` error. The client then opens a new stream (nginx picks a live replica) and
resends the requests that got no answer. No request is lost or half answered.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from kernel_test_backends.configs import ADDSUB_ANY_LENGTH, REPEAT, sleeping
from tritonclient.utils import InferenceServerException

from kernel.testing import write_model

TEMPLATE = Path(__file__).parent / "interop" / "nginx-replicas.conf.template"
# identity after 200 ms, so requests are in flight whenever a replica gets SIGTERM
SLOW = sleeping(200, instances=4)
REPLICAS = ("A", "B", "C")
SHUTTING_DOWN = "the server is shutting down"


def _wait_for(condition: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # bounded: by the deadline
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Replica:
    """One ``kernel serve`` subprocess on fixed ports (nginx's upstream list names them)."""

    def __init__(self, repo: Path, http_port: int, grpc_port: int, log: Path) -> None:
        self.repo, self.http_port, self.grpc_port, self.log = repo, http_port, grpc_port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kernel",
                    "serve",
                    f"--model-repository={self.repo}",
                    f"--http-port={self.http_port}",
                    f"--grpc-port={self.grpc_port}",
                    "--allow-metrics=false",
                    "--exit-timeout-secs=20",
                ],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        _wait_for(self.ready, f"replica on {self.http_port} to be ready", 60)

    def ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "kernel serve exited:\n" + self.log.read_text()
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status == 200  # type: ignore[no-any-return]
        except OSError:
            return False

    def stop(self) -> int:
        """SIGTERM, as the kubelet sends; the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Cluster:
    replicas: list[Replica]
    http: str
    grpc: str
    prefix: Path


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, start_nginx: Any, free_ports: Any
) -> Iterator[Cluster]:
    repo = tmp_path_factory.mktemp("replica_models")
    write_model(repo, "addsub", ADDSUB_ANY_LENGTH)
    write_model(repo, "slow", SLOW)
    write_model(repo, "repeat", REPEAT)
    prefix = tmp_path_factory.mktemp("nginx_replicas")
    ports = free_ports(6)
    replicas = [
        Replica(repo, ports[2 * i], ports[2 * i + 1], prefix / f"replica-{name}.log")
        for i, name in enumerate(REPLICAS)
    ]
    values = {"PREFIX": str(prefix)}
    for name, replica in zip(REPLICAS, replicas, strict=True):
        values[f"HTTP_{name}"] = str(replica.http_port)
        values[f"GRPC_{name}"] = str(replica.grpc_port)
    nginx = None
    try:
        for replica in replicas:
            replica.start()
        nginx = start_nginx(TEMPLATE, prefix, values, ["HTTP", "GRPC"])
        yield Cluster(replicas, nginx.address("HTTP"), nginx.address("GRPC"), prefix)
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.kill()


def _addsub(module: Any, a: np.ndarray, b: np.ndarray) -> list[Any]:
    inputs = [
        module.InferInput("INPUT0", list(a.shape), "FP32"),
        module.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def _unary_call(module: Any, client: Any, i: int) -> None:
    """One addsub or slow call with values of its own; the answer must match them."""
    a = np.arange(16, dtype=np.float32) + i
    b = np.full(16, i % 7, dtype=np.float32)
    if i % 3:
        result = client.infer("addsub", _addsub(module, a, b))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    else:
        tensor = module.InferInput("INPUT0", [16], "FP32")
        tensor.set_data_from_numpy(a)
        result = client.infer("slow", [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a)


def _describe(exc: Exception) -> str:
    if isinstance(exc, InferenceServerException):  # its repr shows nothing
        return f"{exc.status()}: {exc.message()}"
    return repr(exc)


@dataclass
class Load:
    """Counts of the load threads; any entry in ``errors`` fails the test."""

    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0

    def count(self, kind: str) -> None:
        with self.lock:
            self.answered[kind] = self.answered.get(kind, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def _http_load(cluster: Cluster, load: Load, worker: int) -> None:
    client = httpclient.InferenceServerClient(
        cluster.http, connection_timeout=10, network_timeout=30
    )
    try:
        i = worker * 1_000_000
        while not load.stop.is_set():  # bounded: the test sets stop after the rolling update
            i += 1
            try:
                _unary_call(httpclient, client, i)
                load.count("http")
            except Exception as exc:  # every failure is the test's finding
                load.fail(f"http request {i}: {_describe(exc)}")
    finally:
        client.close()


def _grpc_load(cluster: Cluster, load: Load, worker: int) -> None:
    client = grpcclient.InferenceServerClient(cluster.grpc)
    try:
        i = worker * 1_000_000
        while not load.stop.is_set():  # bounded: the test sets stop after the rolling update
            i += 1
            try:
                _unary_call(grpcclient, client, i)
                load.count("grpc")
            except Exception as exc:  # every failure is the test's finding
                load.fail(f"grpc request {i}: {_describe(exc)}")
    finally:
        client.close()


class StreamClient:
    """Decoupled ``repeat`` requests over ``ModelStreamInfer``, reconnecting as documented.

    ``repeat`` answers one response per element of IN; a request is done when all arrived.
    """

    def __init__(self, cluster: Cluster, load: Load) -> None:
        self.cluster, self.load = cluster, load
        self.events: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.expected: dict[str, list[int]] = {}
        self.got: dict[str, list[int]] = {}
        self.serial = 0

    def run(self) -> None:
        client = grpcclient.InferenceServerClient(self.cluster.grpc)
        try:
            while not self.load.stop.is_set():  # bounded: by stop, each stream by its wait
                self._one_stream(client)
        except Exception:  # every failure is the test's finding
            self.load.fail(f"stream client: {traceback.format_exc()}")
        finally:
            client.close()

    def _send_new(self, client: grpcclient.InferenceServerClient, count: int) -> None:
        for _ in range(count):
            self.serial += 1
            rid = f"s{self.serial}"
            self.expected[rid] = list(range(self.serial, self.serial + 1 + self.serial % 4))
            self.got[rid] = []
            self._send(client, rid)

    def _send(self, client: grpcclient.InferenceServerClient, rid: str) -> None:
        values = self.expected[rid]
        tensor = grpcclient.InferInput("IN", [len(values)], "INT32")
        tensor.set_data_from_numpy(np.array(values, dtype=np.int32))
        try:
            client.async_stream_infer("repeat", [tensor], request_id=rid)
        except InferenceServerException as exc:
            # the stream just ended (its status is on the way to the callback): the request
            # was not sent, and goes on the next stream with the others that got no answer
            assert "A new stream should be started" in str(exc), exc

    def _one_stream(self, client: grpcclient.InferenceServerClient) -> None:
        """One stream: resend what the last one left unanswered, then keep four requests open
        until stop, or until the replica says it is going away."""
        self.events = queue.Queue()
        events = self.events
        client.start_stream(callback=lambda result, error: events.put((result, error)))
        ended = False
        try:
            for rid in [r for r, got in self.got.items() if not got]:
                self._send(client, rid)
            self._send_new(client, 4 - len(self._open()))
            deadline = time.monotonic() + 30
            while self._open() and time.monotonic() < deadline:  # bounded: 30 s per stream
                try:
                    result, error = events.get(timeout=1)
                except queue.Empty:
                    continue
                if error is not None:
                    if "UNAVAILABLE" not in str(error.status()) and SHUTTING_DOWN not in str(error):
                        self.load.fail(f"stream error a client cannot retry: {_describe(error)}")
                    # the replica drains: no new request on this stream; what it accepted
                    # still arrives until the stream ends (a status on the stream: ended)
                    ended = ended or error.status() is not None
                    if ended:
                        break
                    continue
                rid = result.get_response().id
                self.got[rid].append(int(result.as_numpy("OUT")[0]))
                if self.got[rid] == self.expected[rid]:
                    self.load.count("stream")
                    del self.expected[rid], self.got[rid]
                    if not self.load.stop.is_set():
                        self._send_new(client, 1)
            else:
                if self._open():
                    self.load.fail(f"stream requests unanswered after 30 s: {self._open()}")
        finally:
            client.stop_stream(cancel_requests=ended)
        if ended:
            self.load.reconnects += 1
            partial = {r: (g, self.expected[r]) for r, g in self.got.items() if g}
            if partial:
                self.load.fail(f"stream requests half answered when the stream ended: {partial}")
                for rid in partial:
                    del self.expected[rid], self.got[rid]

    def _open(self) -> list[str]:
        return list(self.expected)


def test_rolling_restart_behind_nginx_loses_nothing(cluster: Cluster) -> None:
    load = Load()
    stream = StreamClient(cluster, load)
    threads = [
        threading.Thread(target=_http_load, args=(cluster, load, 1)),
        threading.Thread(target=_http_load, args=(cluster, load, 2)),
        threading.Thread(target=_grpc_load, args=(cluster, load, 3)),
        threading.Thread(target=_grpc_load, args=(cluster, load, 4)),
        threading.Thread(target=stream.run),
    ]
    for thread in threads:
        thread.start()
    statuses = []
    try:
        _wait_for(lambda: len(load.answered) == 3, "answers of every kind", 30)
        for replica in cluster.replicas:  # a rolling update, one replica at a time
            statuses.append(replica.stop())
            replica.start()
            time.sleep(1.5)  # past fail_timeout: nginx sends the restarted replica its share
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert statuses == [0, 0, 0]
    assert not load.errors, load.errors[:10]
    assert all(load.answered.get(kind, 0) > 20 for kind in ("http", "grpc", "stream")), load
    assert load.reconnects >= 1, "no stream was on a replica that stopped"
    # nginx logs at [error] the refusals it retried elsewhere: a stopped replica refusing the
    # connection; one closing a kept-alive connection as nginx sent a request on it (the
    # HTTP/1.1 race no server can avoid: it cannot tell an idle client it is leaving). Anything
    # else (e.g. "upstream sent goaway with error 0": a stream refused by the replica's GOAWAY,
    # which its two-step GOAWAY avoids) is a replica misbehaving.
    retried = ("Connection refused", "prematurely closed connection while reading response header")
    lines = (cluster.prefix / "error.log").read_text().splitlines()
    levels = ("[error]", "[crit]", "[alert]", "[emerg]")
    unexpected = [
        x for x in lines if any(w in x for w in levels) and not any(r in x for r in retried)
    ]
    assert not unexpected, unexpected
    # every answer nginx gave was a 200, and every replica answered some (after its restart too)
    served = (cluster.prefix / "replicas.log").read_text().splitlines()
    assert served and all(x.startswith("200 ") for x in served), [
        x for x in served if not x.startswith("200 ")
    ][:10]
    last = {port: i for i, x in enumerate(served) for port in re.findall(r":(\d+)", x)}
    for replica in cluster.replicas:
        for port in (replica.http_port, replica.grpc_port):
            assert last.get(str(port), -1) > len(served) // 2, f"no answer from {port} lately"


def test_a_starting_replica_refuses_connections_until_its_models_loaded(
    tmp_path: Path, free_ports: Any
) -> None:
    """As tritonserver: the ports listen once the startup models settled, so a proxy never
    reaches a replica that would answer "unknown model" (a 404 it does not retry)."""
    write_model(
        tmp_path,
        "slow_init",
        ADDSUB_ANY_LENGTH + 'parameters { key: "init_sleep_ms" value { string_value: "1500" } }',
    )
    http_port, grpc_port = free_ports(2)
    replica = Replica(tmp_path, http_port, grpc_port, tmp_path / "replica.log")
    replica.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kernel",
            "serve",
            f"--model-repository={tmp_path}",
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        refused = 0
        deadline = time.monotonic() + 60
        while True:  # bounded: 60 s
            assert time.monotonic() < deadline, "the replica never listened"
            assert replica.proc.poll() is None, "kernel serve exited"
            url = f"http://127.0.0.1:{http_port}/v2/models/slow_init/ready"
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    assert answer.status == 200  # the first answer: the model is ready
                    break
            except urllib.error.HTTPError as exc:
                pytest.fail(f"answered {exc.code} before the model was ready")
            except OSError:
                refused += 1
                time.sleep(0.05)
        assert refused > 0  # it was tried while the model loaded
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            assert client.is_model_ready("slow_init")
        finally:
            client.close()
        assert replica.stop() == 0
    finally:
        replica.kill()
