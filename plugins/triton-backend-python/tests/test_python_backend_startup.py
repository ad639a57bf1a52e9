"""``--exit-on-error`` with Python models (tritonserver's default, true: a model whose model.py
is missing or fails to import stops ``kernel serve`` at start; a later failure never stops the
server), and ``kernel backends`` listing the three kinds of Python-based backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel import ModelControlMode
from kernel.testing import ServerThread, write_model

KERNEL = [sys.executable, "-m", "kernel"]
ADD_ONE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy() + 1)]
            )
            for r in requests
        ]
"""
CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


def python_model(repo: Path, name: str, source: str | None, config: str = CONFIG) -> Path:
    write_model(repo, name, config)
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    if source is not None:
        (version / "model.py").write_text(textwrap.dedent(source))
    return version


def serve(repo: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *KERNEL,
            "serve",
            "--model-repository",
            str(repo),
            "--host=127.0.0.1",
            "--http-port=0",
            "--grpc-port=0",
            "--metrics-port=0",
            *flags,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_missing_model_py_stops_serve_at_start(tmp_path: Path) -> None:
    python_model(tmp_path, "good", ADD_ONE)
    missing = python_model(tmp_path, "missing", None)
    proc = serve(tmp_path)
    try:
        _, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "failed to load all models (--exit-on-error=true): missing" in stderr
    assert f"Python model file not found in '{missing / 'model.py'}'" in stderr


def test_import_error_stops_serve_and_is_logged_once(tmp_path: Path) -> None:
    python_model(tmp_path, "good", ADD_ONE)
    version = python_model(tmp_path, "broken", "import json\nfrom .helpers import nope\n")
    (version / "helpers.py").write_text("x = 1\n")
    proc = serve(tmp_path, "--log-format=json")
    try:
        _, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    logged = [
        line
        for line in stderr.splitlines()
        if line.startswith("{") and "failed to import Python model file" in line
    ]
    assert len(logged) == 1, stderr  # once: model, file and traceback summary
    assert '"model": "broken"' in logged[0]
    assert str(version / "model.py") in logged[0]
    assert "ImportError" in logged[0]
    assert f"traceback: {version / 'model.py'}:2 in <module>" in logged[0]


def test_exit_on_error_false_serves_the_other_models(tmp_path: Path) -> None:
    python_model(tmp_path, "good", ADD_ONE)
    python_model(tmp_path, "missing", None)
    proc = serve(tmp_path, "--exit-on-error=false")
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("| missing"):
                break
        table = "".join(lines)
        assert "| good " in table and "READY" in table, table
        assert "UNAVAILABLE: " in table
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_a_failed_reload_never_stops_the_server(tmp_path: Path) -> None:
    version = python_model(tmp_path, "good", ADD_ONE)
    with ServerThread(
        tmp_path,
        exit_on_error=True,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["*"],
    ) as srv:
        client = httpclient.InferenceServerClient(srv.http_url)
        try:
            (version / "model.py").write_text("raise RuntimeError('broken on reload')\n")
            try:
                client.load_model("good")
            except Exception as exc:
                assert "broken on reload" in str(exc)
            else:
                raise AssertionError("the reload should fail")
            assert client.is_server_live()
            inp = httpclient.InferInput("IN", [2], "FP32")
            inp.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
            out = client.infer("good", [inp]).as_numpy("OUT")  # the old version still serves
            np.testing.assert_allclose(out, [2, 3])
        finally:
            client.close()


def installed_distribution(site: Path) -> None:
    """A pip distribution, as pip leaves one in site-packages, whose ``kernel.backends`` entry
    point declares a ``TritonPythonModel``: written here so that this suite needs nothing but
    the kernel and this plugin installed (issue 15: no docs example or other plugin)."""
    package = site / "triton_tinyscale_backend"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(ADD_ONE)
    info = site / "triton_tinyscale_backend-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: triton-tinyscale-backend\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[kernel.backends]\ntinyscale = triton_tinyscale_backend.model:TritonPythonModel\n"
    )


def test_backends_lists_the_three_kinds_with_where_each_was_found(tmp_path: Path) -> None:
    site = tmp_path / "site"
    installed_distribution(site)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    backends = tmp_path / "backends"
    (backends / "scaler").mkdir(parents=True)
    (backends / "scaler" / "model.py").write_text(ADD_ONE)
    repo = tmp_path / "repo"
    own = python_model(
        repo, "own", None, CONFIG.replace('"python"', '"mine"') + 'runtime: "impl.py"\n'
    )
    (own / "impl.py").write_text(ADD_ONE)
    out = subprocess.run(
        [
            *KERNEL,
            "backends",
            "--backend-directory",
            str(backends),
            "--model-repository",
            str(repo),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if "|" in line}
    assert "| plugin " in rows["python"]
    assert "| python-based " in rows["tinyscale"]  # a pip distribution's TritonPythonModel
    assert "triton_tinyscale_backend.model:TritonPythonModel" in rows["tinyscale"]
    assert "triton-tinyscale-backend" in rows["tinyscale"]
    assert "python-based (backend directory)" in rows["scaler"]
    assert str(backends / "scaler" / "model.py") in rows["scaler"]
    assert "python-based (model 'own')" in rows["mine"]
    assert str(own / "impl.py") in rows["mine"]


def test_a_pip_distribution_s_triton_python_model_serves_its_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a) of the three ways: models name the backend a distribution's entry point declares;
    # the python plugin serves them in both execution modes (a model process finds the
    # distribution on its path as the server does: here through PYTHONPATH).
    site = tmp_path / "site"
    installed_distribution(site)
    monkeypatch.syspath_prepend(str(site))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    repo = tmp_path / "repo"
    for mode in ("in_process", "process"):
        mode_config = f'parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}\n'
        python_model(repo, mode, None, CONFIG.replace('"python"', '"tinyscale"') + mode_config)
    with ServerThread(repo) as server:
        for mode in ("in_process", "process"):
            for protocol, module in (("http", httpclient), ("grpc", grpcclient)):
                client: Any = module.InferenceServerClient(
                    server.http_url if protocol == "http" else server.grpc_url
                )
                try:
                    inp = module.InferInput("IN", [2], "FP32")
                    inp.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
                    out = client.infer(mode, [inp]).as_numpy("OUT")
                finally:
                    client.close()
                np.testing.assert_allclose(out, [2, 3], err_msg=f"{mode} over {protocol}")
