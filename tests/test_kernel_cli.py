"""The ``kernel`` command: serve (start, status table, SIGTERM drain and exit 0), backends,
check, and tritonserver flags it refuses by name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

KERNEL = [sys.executable, "-m", "kernel"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KERNEL, *args], capture_output=True, text=True, timeout=timeout)


def test_backends_lists_distribution_version_and_attributes() -> None:
    out = _run("backends", "--import")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "| kerneltest_parallel " in x)
    assert "kernel-test-backends" in line
    assert "0.1.0" in line
    assert "parallel_instance_loading=True" in line
    broken = next(x for x in out.stdout.splitlines() if "| kerneltest_broken_import " in x)
    assert "fails to import" in broken


def test_check_lists_every_problem_and_exits_nonzero(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "good", kt_config())
    add_model(repo, "bad_syntax", "max_batch_size: x\n")
    add_model(repo, "no_backend", 'backend: "nosuchbackend"\n')
    add_model(repo, "no_versions", kt_config(), versions=())
    out = _run("check", str(repo))
    assert out.returncode == 1
    errors = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 3, out.stderr
    assert any(
        "bad_syntax" in e and "config.pbtxt:1:17" in e and "max_batch_size" in e for e in errors
    )
    assert any("no_backend" in e and "'nosuchbackend' is not installed" in e for e in errors)
    assert any("no_versions" in e and "at least one version" in e for e in errors)
    assert "checked 4 models: 3 problem(s)" in out.stdout
    shutil.rmtree(repo / "bad_syntax")
    shutil.rmtree(repo / "no_backend")
    shutil.rmtree(repo / "no_versions")
    ok = _run("check", str(repo))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--repoagent-directory=/x", "tritonserver flag --repoagent-directory is not supported"),
        ("--host-policy=numa,numa-node=0", "is not supported"),
        ("--model-namespacing=true", "--model-namespacing=true is not supported"),
        ("--no-such-flag", "unknown flag(s) --no-such-flag"),
    ],
)
def test_serve_refuses_flags_it_does_not_implement(flag: str, message: str) -> None:
    out = _run("serve", flag)
    assert out.returncode != 0
    assert message in out.stderr


def test_serve_prints_status_table_and_drains_on_sigterm(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    add_model(repo, "m", kt_config("addsub", count=2))
    add_model(repo, "broken", 'backend: "nosuchbackend"\n')
    proc = subprocess.Popen(
        [
            *KERNEL,
            "serve",
            "--model-repository",
            str(repo),
            "--host=127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            f"--backend-config=kerneltest,lifecycle_log={log}",
            "--exit-on-error=false",  # the broken model must not stop the server
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if any(x.startswith("| m ") for x in lines) and any(
                x.startswith("| broken") for x in lines
            ):
                break
        table = "".join(lines)
        assert "| m " in table and "READY" in table, table
        assert "UNAVAILABLE: backend 'nosuchbackend' is not installed" in table
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert log.read_text().splitlines()[-4:] == [
        "instance.finalize m_0_1",
        "instance.finalize m_0_0",
        "model.finalize m 1",
        "backend.finalize",
    ]
