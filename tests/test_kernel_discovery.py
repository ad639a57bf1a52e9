"""Backends found through entry points of a really installed distribution, imported lazily,
with failures confined to the models that need them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from kernel import InferenceRequest
from kernel._registry import PROJECT_DISTRIBUTIONS, BackendRegistry
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def test_test_plugin_distribution_is_installed() -> None:
    eps = {ep.name: ep for ep in entry_points(group="kernel.backends")}
    assert eps["kerneltest"].value == "kernel_test_backends.backend:TestBackend"
    assert eps["kerneltest"].dist is not None
    assert eps["kerneltest"].dist.name == "kernel-test-backends"
    info = BackendRegistry.installed()["kerneltest"]
    assert (info.distribution, info.version) == ("kernel-test-backends", "0.1.0")


def test_backends_are_imported_only_when_a_model_needs_them(tmp_path: Path) -> None:
    # A fresh interpreter: listing backends and starting a server with no model that needs
    # the plugin must not import it.
    code = """
import sys, anyio
from kernel import InferenceServer, ServerOptions
from kernel._registry import PROJECT_DISTRIBUTIONS, BackendRegistry
assert "kerneltest" in BackendRegistry.installed()
async def main():
    options = ServerOptions(model_repositories=[sys.argv[1]], http_port=None, grpc_port=None,
                            metrics_port=None)
    async with InferenceServer(options).running():
        pass
anyio.run(main)
print(sorted(m for m in sys.modules if m.startswith("kernel_test_backends") or m in
      ("torch", "onnxruntime", "openvino", "xgboost")))
"""
    (tmp_path / "empty").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


async def test_missing_backend_names_itself_the_installed_ones_and_the_distribution(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every backend of this repository may be installed here: pretend the project ships one
    # more, which is not installed.
    monkeypatch.setitem(PROJECT_DISTRIBUTIONS, "futurebackend", "triton-backend-future")
    add_model(repo, "needs_future", 'backend: "futurebackend"\n')
    add_model(repo, "needs_other", 'backend: "nosuchbackend"\n')
    add_model(repo, "fine", kt_config("addsub"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        rows = {(r.name, r.state): r.reason for r in srv.server.repository_index()}
        future_reason = rows[("needs_future", "UNAVAILABLE")]
        assert "backend 'futurebackend' is not installed" in future_reason
        assert "kerneltest" in future_reason  # the installed ones are listed
        assert "pip install triton-backend-future" in future_reason
        other_reason = rows[("needs_other", "UNAVAILABLE")]
        assert "backend 'nosuchbackend' is not installed" in other_reason
        assert "pip install" not in other_reason
        assert ("fine", "READY") in rows


async def test_broken_plugins_make_only_their_models_unavailable(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "broken_import", kt_config(backend="kerneltest_broken_import"))
    add_model(repo, "broken_init", kt_config(backend="kerneltest_broken_init"))
    add_model(repo, "not_a_backend", kt_config(backend="kerneltest_not_a_backend"))
    add_model(repo, "good", kt_config("addsub"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        rows = {r.name: r for r in srv.server.repository_index()}
        assert rows["broken_import"].state == "UNAVAILABLE"
        assert "failed to import" in rows["broken_import"].reason
        assert "fails to import on purpose" in rows["broken_import"].reason
        assert rows["broken_init"].state == "UNAVAILABLE"
        assert "failed to initialize" in rows["broken_init"].reason
        assert "refuses to initialize" in rows["broken_init"].reason
        assert "is not a kernel.Backend subclass" in rows["not_a_backend"].reason
        assert rows["good"].state == "READY"
        a = np.ones((2, 4), np.float32)
        response = await srv.server.infer_once(InferenceRequest("good", {"INPUT0": a, "INPUT1": a}))
        np.testing.assert_array_equal(response.outputs["OUTPUT0"], a + a)
        assert not srv.server.is_ready()  # strict readiness: not every model is ready
