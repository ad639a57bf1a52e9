"""Throughput of the response cache's hit path against running the model.

A model that takes 2 ms per request (the test backends' ``sleep`` behaviour, one instance),
with ``response_cache { enable: true }``; the server runs with and without
``--cache-config local,size=16MiB``. Clients send the same request over and over for a fixed
time: in-process (``server.infer_once``, the kernel's own cost) and through tritonclient gRPC
from 4 threads (what a client sees).

Needs the test backends (``pip install -e tests/plugins/kernel-test-backends``):

    python bench/response_cache.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from kernel import InferenceRequest
from kernel.testing import ServerThread, write_model

CONFIG = """
backend: "kerneltest"
max_batch_size: 0
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "behaviour" value { string_value: "sleep" } }
parameters { key: "sleep_ms" value { string_value: "2" } }
response_cache { enable: true }
"""

DATA = np.arange(16, dtype=np.float32)


def in_process(thread: ServerThread, seconds: float) -> float:
    """Requests per second through ``server.infer_once`` on the server's own loop."""

    async def loop() -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            request = InferenceRequest("m", {"INPUT0": DATA, "INPUT1": DATA})
            response = await thread.server.infer_once(request)
            assert response.error is None
            count += 1
        return count

    done: int = thread.call(loop)
    return done / seconds


def over_grpc(url: str, seconds: float, threads: int = 4) -> float:
    counts = [0] * threads
    end = time.perf_counter() + seconds

    def client(index: int) -> None:
        with grpcclient.InferenceServerClient(url) as c:
            inputs = []
            for name in ("INPUT0", "INPUT1"):
                tensor = grpcclient.InferInput(name, [16], "FP32")
                tensor.set_data_from_numpy(DATA)
                inputs.append(tensor)
            while time.perf_counter() < end:
                c.infer("m", inputs)
                counts[index] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 60)
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print("| server cache | in-process infer/s | tritonclient gRPC x4 infer/s | hits | misses |")
    print("|---|---|---|---|---|")
    for cached in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            write_model(Path(tmp), "m", CONFIG)
            overrides: dict[str, Any] = {"http_port": None, "metrics_port": None}
            if cached:
                overrides["cache_config"] = {"local": {"size": str(16 << 20)}}
            thread = ServerThread(tmp, **overrides)
            with thread as running:
                local = in_process(thread, args.seconds)
                remote = over_grpc(running.grpc_url, args.seconds)
                stats = running.server.model_statistics("m")[0]
                print(
                    f"| {'local, 16 MiB' if cached else 'none'} | {local:,.0f} | {remote:,.0f}"
                    f" | {stats.cache_hit.count:,} | {stats.cache_miss.count:,} |"
                )


if __name__ == "__main__":
    main()
