"""The distribution: its entry point, its dependencies, its public surface."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points

import triton_backend_torch

from kernel import Backend


def test_entry_point_is_installed() -> None:
    (ep,) = entry_points(group="kernel.backends", name="pytorch")
    assert ep.value == "triton_backend_torch:PyTorchBackend"
    assert ep.dist is not None and ep.dist.name == "triton-backend-torch"
    backend = ep.load()
    assert issubclass(backend, Backend)
    assert backend.attributes.parallel_instance_loading


def test_distribution_pulls_the_kernel_and_a_torch_range() -> None:
    requires = distribution("triton-backend-torch").requires or []
    torch_requirement = next(r for r in requires if r.startswith("torch"))
    assert ">=" in torch_requirement and "==" not in torch_requirement
    assert any(r.startswith("triton-kernel") for r in requires)


def test_kernel_backends_lists_it() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "kernel", "backends", "--import"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if " pytorch " in x)
    assert "triton-backend-torch" in line and "parallel_instance_loading=True" in line


def test_public_surface() -> None:
    assert triton_backend_torch.__all__ == ["PyTorchBackend", "PyTorchInstance", "PyTorchModel"]
