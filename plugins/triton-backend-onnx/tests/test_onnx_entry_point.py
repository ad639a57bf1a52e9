"""The distribution: its entry point, its dependencies, its public surface."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points

import triton_backend_onnx

from kernel import Backend


def test_entry_point_is_installed() -> None:
    (ep,) = entry_points(group="kernel.backends", name="onnxruntime")
    assert ep.value == "triton_backend_onnx:OnnxRuntimeBackend"
    assert ep.dist is not None and ep.dist.name == "triton-backend-onnx"
    backend = ep.load()
    assert issubclass(backend, Backend)
    assert backend.attributes.parallel_instance_loading


def test_distribution_pulls_the_kernel_and_onnxruntime_gpu() -> None:
    requires = distribution("triton-backend-onnx").requires or []
    names = {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].strip() for r in requires}
    assert {"triton-kernel", "onnxruntime-gpu"} <= names


def test_kernel_backends_lists_it() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "kernel", "backends", "--import"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if " onnxruntime " in x)
    assert "triton-backend-onnx" in line and "parallel_instance_loading=True" in line


def test_public_surface() -> None:
    assert triton_backend_onnx.__all__ == [
        "OnnxRuntimeBackend",
        "OnnxRuntimeInstance",
        "OnnxRuntimeModel",
    ]
