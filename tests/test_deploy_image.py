"""The container recipe: hadolint, what the Dockerfile promises, and its install step run for real.

No container engine runs here, so the test runs the script the Dockerfile RUNs
(deploy/install.sh) into a fresh venv, then serves a model from it through the ``tritonserver``
command the image offers, and answers it with the real tritonclient (deploy/smoke_test.py).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel.testing import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BIN = Path(sys.executable).parent


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    return [(x.split(None, 1)[0].upper(), x.split(None, 1)[1]) for x in lines]


def _last(instruction: str) -> str:
    return [args for name, args in _instructions() if name == instruction][-1]


def test_hadolint_passes() -> None:
    out = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_runs_as_non_root_under_tini_serving_models_on_all_interfaces() -> None:
    assert _instructions()[0][0] in ("FROM", "ARG")
    assert "python:3.11-slim" in _last("ARG") or "python:3.11-slim" in DOCKERFILE.read_text()
    assert _last("USER") not in ("root", "0")
    assert json.loads(_last("ENTRYPOINT")) == ["/usr/bin/tini", "--"]
    command = json.loads(_last("CMD"))
    assert command[:2] == ["kernel", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--model-repository") + 1] == "/models"
    runs = [args for name, args in _instructions() if name == "RUN"]
    assert any(args.startswith("/src/deploy/install.sh /src /opt/kernel") for args in runs)
    assert "BACKENDS=all" in [args for name, args in _instructions() if name == "ARG"]


def _healthcheck_command(port: int) -> list[str]:
    args = _last("HEALTHCHECK")
    assert "/v2/health/ready" in args
    command: list[str] = json.loads(args[args.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *(c.replace(":8000/", f":{port}/") for c in command[1:])]


def test_healthcheck_one_liner_follows_readiness(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    with ServerThread(tmp_path / "repo", grpc_port=None, metrics_port=None) as running:
        port = int(running.http_url.rsplit(":", 1)[1])
        ready = subprocess.run(_healthcheck_command(port), capture_output=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
    stopped = subprocess.run(_healthcheck_command(port), capture_output=True, timeout=30)
    assert stopped.returncode != 0


def test_install_script_refuses_an_unknown_backend(tmp_path: Path) -> None:
    out = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), str(ROOT), str(tmp_path / "v"), "onnx,tf"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown backend 'tf'" in out.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.timeout(900)
def test_install_script_builds_a_venv_that_serves_through_the_tritonserver_command(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    started = time.monotonic()
    install = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), str(ROOT), str(venv), "python"],
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert install.returncode == 0, install.stdout + install.stderr
    print(f"install.sh python: {time.monotonic() - started:.0f} s")
    assert "| python " in install.stdout  # `kernel backends`, the script's last step
    # Not a source checkout: the server's code and the example models come from the wheels.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import kernel; print(kernel.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert str(venv) in probe.stdout, probe.stdout + probe.stderr
    repo = ROOT / "examples" / "model_repository"
    smoke = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "smoke_test.py"),
            "--model",
            "python_add_sub",
            "--",
            str(venv / "bin" / "tritonserver"),
            f"--model-store={repo}",
            "--model-control-mode=explicit",
            "--load-model=python_add_sub",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "python_add_sub: answered over grpc" in smoke.stdout, shlex.quote(smoke.stdout)
