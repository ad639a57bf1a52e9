"""The distribution: entry point, dependencies, public surface, and the kernel's autofill."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path
from typing import Any

import triton_backend_openvino

from kernel import Backend
from kernel.testing import run_server


def test_entry_point_is_installed() -> None:
    (ep,) = entry_points(group="kernel.backends", name="openvino")
    assert ep.value == "triton_backend_openvino:OpenVinoBackend"
    assert ep.dist is not None and ep.dist.name == "triton-backend-openvino"
    backend = ep.load()
    assert issubclass(backend, Backend)
    assert backend.attributes.parallel_instance_loading


def test_distribution_pulls_the_kernel_and_openvino() -> None:
    requires = distribution("triton-backend-openvino").requires or []
    names = {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].strip() for r in requires}
    assert {"triton-kernel", "openvino"} <= names


def test_kernel_backends_lists_it() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "kernel", "backends", "--import"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if " openvino " in x)
    assert "triton-backend-openvino" in line and "parallel_instance_loading=True" in line


async def test_a_folder_with_only_model_xml_is_an_openvino_model(kit: Any, repo: Path) -> None:
    kit.write_ir(repo, "ir", kit.mlp_model(), None)  # 1/model.xml, no config.pbtxt
    async with run_server(repo, http_port=None, grpc_port=None, metrics_port=None) as srv:
        assert srv.server.is_model_ready("ir"), srv.server.repository_index()
        config = srv.server.model_config("ir")
        assert config.backend == "openvino" and not config.platform


def test_public_surface() -> None:
    assert triton_backend_openvino.__all__ == [
        "OpenVinoBackend",
        "OpenVinoInstance",
        "OpenVinoModel",
    ]
