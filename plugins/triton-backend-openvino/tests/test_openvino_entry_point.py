"""The distribution: entry point, dependencies, public surface, and the kernel's autofill."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import triton_backend_openvino

from kernel import Backend, ModelConfig
from kernel._repository import DEFAULT_MODEL_FILE_BACKENDS


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
        [sys.executable, "-c", "from kernel._cli import main; main(['backends', '--import'])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if " openvino " in x)
    assert "triton-backend-openvino" in line and "parallel_instance_loading=True" in line


def test_a_folder_with_only_model_xml_is_an_openvino_model(tmp_path: Path) -> None:
    from kernel._repository import _autofill_platform

    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.xml").write_text("<net/>")
    config = ModelConfig(name="ir")
    _autofill_platform(config, tmp_path)
    assert config.backend == "openvino" and not config.platform
    assert DEFAULT_MODEL_FILE_BACKENDS[".xml"] == "openvino"


def test_public_surface() -> None:
    assert triton_backend_openvino.__all__ == [
        "OpenVinoBackend",
        "OpenVinoInstance",
        "OpenVinoModel",
    ]
