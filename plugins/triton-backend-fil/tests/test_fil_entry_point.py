"""The distribution: its entry point, its dependencies, its public surface."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points

import triton_backend_fil

from kernel import Backend


def test_entry_point_is_installed() -> None:
    (ep,) = entry_points(group="kernel.backends", name="fil")
    assert ep.value == "triton_backend_fil:FilBackend"
    assert ep.dist is not None and ep.dist.name == "triton-backend-fil"
    backend = ep.load()
    assert issubclass(backend, Backend)
    assert backend.attributes.parallel_instance_loading


def test_distribution_pulls_the_kernel_and_the_frameworks() -> None:
    requires = distribution("triton-backend-fil").requires or []
    names = {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].strip() for r in requires}
    assert {"triton-kernel", "xgboost", "lightgbm", "treelite"} <= names


def test_importing_the_plugin_imports_no_framework() -> None:
    """Frameworks load with the first model that needs them, not with the backend."""
    code = (
        "import sys, triton_backend_fil;"
        "print(sorted(m for m in ('xgboost', 'lightgbm', 'treelite') if m in sys.modules))"
    )
    listed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert listed.stdout.strip() == "[]"


def test_kernel_backends_lists_it() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "kernel", "backends", "--import"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if " fil " in f" {x} ")
    assert "triton-backend-fil" in line and "parallel_instance_loading=True" in line


def test_public_surface() -> None:
    assert triton_backend_fil.__all__ == ["FilBackend", "FilInstance", "FilModel"]
