"""A backend pip-installed into a running server's environment serves the next load, no restart.

Real all the way: a server process runs from its own venv (which sees this project's
environment through a ``site.addsitedir`` .pth, as a ``--system-site-packages`` venv sees the
system's); a model names backend ``hotadd``, which is not installed, and its load fails; then
pip installs a tiny plugin into that venv, once as a wheel and once editable (a new
``__editable__`` .pth file the running interpreter never read); the next load of the model
succeeds and tritonclient gets the plugin's answer.
"""

from __future__ import annotations

import os
import re
import signal
import site
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kernel.testing import write_model

_PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "kerneltest-hotadd"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = []

[project.entry-points."kernel.backends"]
hotadd = "kerneltest_hotadd:AddOneBackend"

[tool.setuptools.packages.find]
where = ["src"]
"""

_PLUGIN_MODULE = '''
"""Answers OUTPUT0 = INPUT0 + 1."""

from kernel import Backend, InstanceContext, Model, ModelContext, ModelInstance


class AddOneBackend(Backend):
    def create_model(self, context: ModelContext) -> Model:
        return AddOneModel(context)


class AddOneModel(Model):
    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return AddOneInstance(context)


class AddOneInstance(ModelInstance):
    def execute(self, requests):
        for request in requests:
            request.respond({"OUTPUT0": request.inputs["INPUT0"] + 1})
'''

_CONFIG = """
backend: "hotadd"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

_STARTED = re.compile(r"started http endpoint at [\d.]+:(\d+)")


def _run(*args: str | Path, timeout: float = 300) -> None:
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _server_venv(tmp_path: Path) -> Path:
    """A venv whose interpreter also sees this project's environment (kernel, numpy...)."""
    venv = tmp_path / "server-venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    (purelib / "_project_environment.pth").write_text(lines)
    return venv


class _Server:
    def __init__(self, venv: Path, repo: Path) -> None:
        self.proc = subprocess.Popen(
            [
                str(venv / "bin" / "python"),
                "-m",
                "kernel",
                "serve",
                "--model-repository",
                str(repo),
                "--model-control-mode",
                "explicit",
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--allow-grpc",
                "false",
                "--allow-metrics",
                "false",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise AssertionError("".join(self.log))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            found = _STARTED.search(line)
            if found:
                self.port = int(found.group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _infer(client: httpclient.InferenceServerClient) -> np.ndarray:
    item = httpclient.InferInput("INPUT0", [4], "FP32")
    item.set_data_from_numpy(np.arange(4, dtype=np.float32))
    result = client.infer("m", [item])
    output = result.as_numpy("OUTPUT0")
    assert output is not None
    return output


@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["wheel", "editable"])
def test_backend_installed_while_serving_loads_without_restart(tmp_path: Path, how: str) -> None:
    plugin = tmp_path / "plugin"
    (plugin / "src" / "kerneltest_hotadd").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(_PLUGIN_PYPROJECT)
    (plugin / "src" / "kerneltest_hotadd" / "__init__.py").write_text(
        textwrap.dedent(_PLUGIN_MODULE)
    )
    repo = tmp_path / "models"
    write_model(repo, "m", _CONFIG)
    venv = _server_venv(tmp_path)
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"]
    pip += ["--quiet", "--no-deps", "--no-index", "--no-build-isolation"]

    server = _Server(venv, repo)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            with pytest.raises(InferenceServerException, match="'hotadd' is not installed"):
                client.load_model("m")
            if how == "wheel":
                wheels = tmp_path / "wheels"
                _run(
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                    wheels,
                    plugin,
                )
                (wheel,) = wheels.glob("*.whl")
                _run(*pip, wheel)
            else:
                _run(*pip, "--editable", plugin)
            client.load_model("m")  # the same server process: no restart
            assert client.is_model_ready("m")
            np.testing.assert_array_equal(_infer(client), np.arange(4, dtype=np.float32) + 1)
        finally:
            client.close()
    finally:
        status = server.stop()
    log = "".join(server.log)
    assert status == 0, log
    if how == "editable":
        assert re.search(r"read __editable__.*kerneltest_hotadd.*\.pth", log), log


def test_site_packages_reads_new_and_rewritten_pth_files_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernel import _discovery

    sitedir = tmp_path / "site-packages"
    sitedir.mkdir()
    monkeypatch.setattr(_discovery, "_site_dirs", lambda: [str(sitedir)])
    monkeypatch.setattr(sys, "path", list(sys.path))
    (sitedir / "old.pth").write_text(f"{tmp_path / 'old'}\n")
    (tmp_path / "old").mkdir()
    watcher = _discovery.SitePackages()
    assert watcher.refresh() == []  # present at start: the interpreter read it then
    assert str(tmp_path / "old") not in sys.path
    (tmp_path / "new").mkdir()
    (sitedir / "__editable__.new-0.1.pth").write_text(f"{tmp_path / 'new'}\n")
    assert watcher.refresh() == [str(sitedir / "__editable__.new-0.1.pth")]
    assert sys.path.count(str(tmp_path / "new")) == 1
    assert watcher.refresh() == []
    (tmp_path / "other").mkdir()
    pth = sitedir / "__editable__.new-0.1.pth"
    pth.write_text(f"{tmp_path / 'other'}\n")
    os.utime(pth, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert watcher.refresh() == [str(pth)]
    assert str(tmp_path / "other") in sys.path
