"""How long a model with 4 instances, each taking 1 s to initialize, takes to become ready,
with and without ``parallel_instance_loading`` (issue: well under 2 s versus about 4 s).

Needs the test backends (``pip install -e tests/plugins/kernel-test-backends``).

    python bench/parallel_loading.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import anyio

from kernel.testing import run_server, write_model

CONFIG = """
backend: "{backend}"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ count: 4 kind: KIND_CPU }} ]
parameters {{ key: "init_sleep_ms" value {{ string_value: "1000" }} }}
"""


async def ready_seconds(backend: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp), "slow", CONFIG.format(backend=backend))
        start = time.perf_counter()
        async with run_server(tmp, http_port=None, grpc_port=None, metrics_port=None) as srv:
            elapsed = time.perf_counter() - start
            assert srv.server.is_model_ready("slow")
        return elapsed


async def main() -> None:
    print("| parallel_instance_loading | ready after (s) |")
    print("|---|---|")
    for backend, parallel in (("kerneltest_parallel", True), ("kerneltest", False)):
        print(f"| {parallel} | {await ready_seconds(backend):.2f} |")


if __name__ == "__main__":
    anyio.run(main)
