"""Every distribution as a wheel, each plugin installed alone with the kernel, serving.

The wheels are built once (``pip wheel --no-deps``) from this checkout; each plugin then goes
into its own fresh venv with the kernel's wheel (not editable, no source tree on the path;
third-party dependencies from the package index, pinned by constraints.txt), and that venv's
``kernel serve`` -- given no repository, so it serves the example repository shipped inside the
kernel's wheel -- answers a tritonclient request for that backend's example model over HTTP and
gRPC (deploy/smoke_test.py). Venvs are built one after the other: the machine has two cores.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {
    "onnx": ("triton-backend-onnx", "onnxruntime", "onnx_add_sub"),
    "torch": ("triton-backend-torch", "pytorch", "torch_add_sub"),
    "openvino": ("triton-backend-openvino", "openvino", "openvino_classifier"),
    "fil": ("triton-backend-fil", "fil", "fil_xgboost"),
    "python": ("triton-backend-python", "python", "python_add_sub"),
}
ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

# Building six wheels (each in pip's isolated build environment) and whole framework installs
# take minutes on two shared cores; every subprocess below has its own bound too.
pytestmark = pytest.mark.timeout(1200)


def _run(*args: str | Path, timeout: float, cwd: Path | None = None) -> str:
    out = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=cwd,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Distribution name -> its wheel, built from this checkout."""
    folder = tmp_path_factory.mktemp("wheels")
    sources = [ROOT, *(ROOT / "plugins" / dist for dist, _, _ in PLUGINS.values())]
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        folder,
        *sources,
        timeout=600,
    )
    found = {}
    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            metadata = email.message_from_bytes(archive.read(name))
        found[str(metadata["Name"])] = wheel
    assert set(found) == {"triton-kernel", *(dist for dist, _, _ in PLUGINS.values())}
    return found


def _metadata(wheel: Path) -> tuple[email.message.Message, list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name)), names


def test_every_wheel_carries_the_apache_license(wheels: dict[str, Path]) -> None:
    for wheel in wheels.values():
        metadata, names = _metadata(wheel)
        assert metadata["License-Expression"] == "Apache-2.0", wheel.name
        (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        with zipfile.ZipFile(wheel) as archive:
            assert b"Apache License" in archive.read(license_file)


def test_plugins_require_a_compatible_kernel(wheels: dict[str, Path]) -> None:
    from packaging.requirements import Requirement

    kernel_version = _metadata(wheels["triton-kernel"])[0]["Version"]
    for dist, _, _ in PLUGINS.values():
        requires = [Requirement(r) for r in _metadata(wheels[dist])[0].get_all("Requires-Dist")]
        (kernel,) = [r for r in requires if r.name == "triton-kernel"]
        assert kernel.specifier, f"{dist} takes any triton-kernel"
        assert kernel.specifier.contains(kernel_version), (dist, str(kernel.specifier))
        assert not kernel.specifier.contains("1.0"), f"{dist} accepts the next major"


def test_kernel_wheel_ships_the_example_repository_and_commands(wheels: dict[str, Path]) -> None:
    _, names = _metadata(wheels["triton-kernel"])
    examples = {n.split("/")[2] for n in names if n.startswith("kernel/_example_repository/")}
    assert {entry[2] for entry in PLUGINS.values()} <= examples
    with zipfile.ZipFile(wheels["triton-kernel"]) as archive:
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "kernel = kernel._cli:main" in text
    assert "tritonserver = kernel._cli:tritonserver" in text


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_plugin_installs_alone_and_serves(
    plugin: str, wheels: dict[str, Path], tmp_path: Path
) -> None:
    dist, backend, model = PLUGINS[plugin]
    venv = tmp_path / "venv"
    started = time.monotonic()
    _run("python3", "-m", "venv", venv, timeout=120)
    _run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        ROOT / "constraints.txt",
        wheels["triton-kernel"],
        wheels[dist],
        timeout=1000,
    )
    print(f"{dist}: venv in {time.monotonic() - started:.0f} s")
    listed = _run(venv / "bin" / "kernel", "backends", timeout=60, cwd=tmp_path)
    rows = [line.split("|")[1].strip() for line in listed.splitlines()[3:-2] if "|" in line]
    assert rows == [backend], listed
    smoke = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "smoke_test.py"),
            "--model",
            model,
            "--",
            str(venv / "bin" / "kernel"),
            "serve",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert f"{model}: answered over http" in smoke.stdout
    assert f"{model}: answered over grpc" in smoke.stdout


def test_python_plugin_suite_passes_with_only_the_kernel_and_the_plugin(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 15: the Python backend's own tests need nothing but the kernel and the plugin.

    A fresh venv gets the two wheels (the plugin with its ``test`` extra: tritonclient and
    pytest, no other plugin, no torch) and runs ``plugins/triton-backend-python/tests`` from
    this checkout with this project's pytest settings. ``pytest`` runs from outside the
    checkout, so ``kernel`` and ``triton_python_backend_utils`` are the installed wheels', not
    the source tree's. About 2 minutes on two loaded cores (the install, then ~175 tests).
    """
    venv = tmp_path / "venv"
    _run("python3", "-m", "venv", venv, timeout=120)
    plugin = wheels["triton-backend-python"]
    _run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        ROOT / "constraints.txt",
        wheels["triton-kernel"],
        f"triton-backend-python[test] @ {plugin.as_uri()}",
        timeout=600,
    )
    listed = _run(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze", timeout=60)
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"triton-kernel", "triton-backend-python", "tritonclient", "pytest"} <= installed
    others = {n for n in installed if n.startswith(("triton-backend-", "triton-frontend-"))}
    assert others == {"triton-backend-python"}, others
    assert not installed & {"torch", "onnxruntime", "openvino", "kernel-test-backends"}
    where = _run(
        venv / "bin" / "python",
        "-c",
        "import kernel, triton_python_backend_utils as u; print(kernel.__file__, u.__file__)",
        timeout=60,
        cwd=tmp_path,
    )
    assert str(ROOT) not in where and str(venv) in where, where
    suite = subprocess.run(
        [
            str(venv / "bin" / "pytest"),
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            "-q",
            "-rs",
            str(ROOT / "plugins" / "triton-backend-python" / "tests"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=ENV,
        cwd=tmp_path,
        check=False,
    )
    summary = suite.stdout.strip().splitlines()[-1] if suite.stdout.strip() else ""
    print(f"triton-backend-python suite alone: {summary}")
    assert suite.returncode == 0, suite.stdout[-8000:] + suite.stderr[-4000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
    # Only what needs a package the plugin does not depend on may skip (torch's DLPack test).
    skipped = [line for line in suite.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("torch" in line for line in skipped), skipped
