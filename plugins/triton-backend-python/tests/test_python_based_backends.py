"""Python-based backends (Triton's term): a ``TritonPythonModel`` shared by the models that
name it, found through ``runtime``, ``--backend-directory`` or a model's own folders, in both
execution modes, through the real tritonclient.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel.testing import ServerThread, write_model

MODES = ("in_process", "process")

# A backend: answers OUT = IN * factor, and says where its model's files are (as Triton passes
# them to a Python-based backend: the model's own folder and version).
BACKEND = """
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from .helpers import factor_of


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.where = json.dumps(
            {
                "model_repository": args["model_repository"],
                "model_version": args["model_version"],
                "model_name": args["model_name"],
                "file": __file__,
                "factor_file": os.path.join(
                    args["model_repository"], args["model_version"], "factor.txt"
                ),
            }
        )
        path = os.path.join(args["model_repository"], args["model_version"], "factor.txt")
        self.factor = factor_of(path, config)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out = pb_utils.Tensor("OUT", (x * self.factor).astype(np.float32))
            where = pb_utils.Tensor("WHERE", np.array([self.where.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out, where]))
        return responses
"""

HELPERS = """
def factor_of(path, config):
    with open(path) as f:
        return float(f.read().strip())
"""


def config(backend: str, runtime: str = "", mode: str = "process") -> str:
    runtime_line = f'runtime: "{runtime}"\n' if runtime else ""
    return (
        f'backend: "{backend}"\n{runtime_line}max_batch_size: 0\n'
        'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] },\n'
        '         { name: "WHERE" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        f'parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}\n'
    )


def backend_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(BACKEND))
    (folder / "helpers.py").write_text(textwrap.dedent(HELPERS))


def model(repo: Path, name: str, text: str, factor: float) -> Path:
    write_model(repo, name, text)
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "factor.txt").write_text(f"{factor}\n")
    return version


def ask(url: str, name: str) -> tuple[np.ndarray, dict[str, str]]:
    client = httpclient.InferenceServerClient(url)
    try:
        inp = httpclient.InferInput("IN", [2], "FP32")
        inp.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        result = client.infer(name, [inp])
        where = json.loads(result.as_numpy("WHERE")[0])
        return result.as_numpy("OUT"), where
    finally:
        client.close()


@pytest.mark.parametrize("mode", MODES)
def test_three_ways_share_one_contract(tmp_path: Path, mode: str) -> None:
    repo, backends = tmp_path / "repo", tmp_path / "backends"
    backend_folder(backends / "scaler")  # (b) --backend-directory DIR/<backend>/model.py
    model(repo, "from_directory", config("scaler", mode=mode), 2.0)
    # (c) runtime: a file in the model's folder (shared by its versions), then in its version
    backend_folder(repo / "from_model_folder")
    model(repo, "from_model_folder", config("scaler2", "model.py", mode), 3.0)
    version = model(repo, "from_version", config("python", "impl.py", mode), 4.0)
    (version / "impl.py").write_text(textwrap.dedent(BACKEND))
    (version / "helpers.py").write_text(textwrap.dedent(HELPERS))
    with ServerThread(repo, backend_directory=backends) as srv:
        out, where = ask(srv.http_url, "from_directory")
        np.testing.assert_allclose(out, [2.0, 4.0])
        assert where["model_repository"] == str(repo / "from_directory")
        assert where["model_version"] == "1"
        assert where["model_name"] == "from_directory"
        assert where["file"] == str(backends / "scaler" / "model.py")
        out, where = ask(srv.http_url, "from_model_folder")
        np.testing.assert_allclose(out, [3.0, 6.0])
        assert where["file"] == str(repo / "from_model_folder" / "model.py")
        assert where["model_repository"] == str(repo / "from_model_folder")
        out, where = ask(srv.http_url, "from_version")
        np.testing.assert_allclose(out, [4.0, 8.0])
        assert where["file"] == str(version / "impl.py")


@pytest.mark.parametrize("mode", MODES)
def test_runtime_naming_nothing_fails_that_model_listing_what_was_looked_for(
    tmp_path: Path, mode: str
) -> None:
    repo, backends = tmp_path / "repo", tmp_path / "backends"
    backends.mkdir()
    model(repo, "no_file", config("scaler", "missing.py", mode), 1.0)
    model(repo, "no_backend", config("python", "nosuchbackend", mode), 1.0)
    model(repo, "escapes", config("scaler", "../../x.py", mode), 1.0)
    model(repo, "unknown_backend", config("nosuchbackend", mode=mode), 1.0)
    with ServerThread(repo, backend_directory=backends) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            rows = {r.name: r for r in client.get_model_repository_index().models}
        finally:
            client.close()
    assert {r.state for r in rows.values()} == {"UNAVAILABLE"}
    reason = rows["no_file"].reason
    assert "runtime 'missing.py' names no Python file" in reason
    for looked in (repo / "no_file" / "1", repo / "no_file", backends / "scaler"):
        assert f"'{looked / 'missing.py'}'" in reason
    reason = rows["no_backend"].reason
    assert "runtime 'nosuchbackend' names no backend" in reason
    assert "entry point 'nosuchbackend' in group kernel.backends" in reason
    assert str(backends / "nosuchbackend" / "model.py") in reason
    assert "runtime '../../x.py' names no Python file" in rows["escapes"].reason
    reason = rows["unknown_backend"].reason
    assert "backend 'nosuchbackend' is not installed" in reason
    assert str(backends / "nosuchbackend" / "model.py") in reason


@pytest.mark.parametrize("mode", MODES)
def test_model_py_imports_its_helpers_relatively(tmp_path: Path, mode: str) -> None:
    repo = tmp_path / "repo"
    version = model(repo, "relative", config("python", mode=mode), 5.0)
    (version / "model.py").write_text(textwrap.dedent(BACKEND))
    (version / "helpers.py").write_text(textwrap.dedent(HELPERS))
    with ServerThread(repo) as srv:
        out, where = ask(srv.http_url, "relative")
        np.testing.assert_allclose(out, [5.0, 10.0])
        assert where["file"] == str(version / "model.py")


@pytest.mark.parametrize("mode", MODES)
def test_import_error_names_model_file_and_traceback(tmp_path: Path, mode: str) -> None:
    repo = tmp_path / "repo"
    version = model(repo, "broken", config("python", mode=mode), 1.0)
    (version / "model.py").write_text("from .helpers import nothing_here\n")
    (version / "helpers.py").write_text("x = 1\n")
    with ServerThread(repo) as srv:
        client = httpclient.InferenceServerClient(srv.http_url)
        try:
            (row,) = client.get_model_repository_index()
        finally:
            client.close()
    assert row["state"] == "UNAVAILABLE"
    assert f"failed to import Python model file '{version / 'model.py'}'" in row["reason"]
    assert "ImportError" in row["reason"]
    assert f"traceback: {version / 'model.py'}:1 in <module>" in row["reason"]


def test_runtime_names_an_installed_backend(tmp_path: Path) -> None:
    # Triton's spelling of a C++ backend library names the installed backend of that name,
    # which then serves the model instead of the one 'backend' names.
    repo = tmp_path / "repo"
    version = model(repo, "renamed", config("notinstalled", "libtriton_python.so"), 6.0)
    (version / "model.py").write_text(textwrap.dedent(BACKEND))
    (version / "helpers.py").write_text(textwrap.dedent(HELPERS))
    with ServerThread(repo) as srv:
        out, where = ask(srv.http_url, "renamed")
        np.testing.assert_allclose(out, [6.0, 12.0])
        assert where["file"] == str(version / "model.py")


@pytest.mark.parametrize("mode", MODES)
def test_model_py_imports_its_neighbours_absolutely(tmp_path: Path, mode: str) -> None:
    # Triton puts the version folder and the model folder on sys.path: `import x` finds a
    # module beside model.py and one in the model's folder (names unique per mode: in-process,
    # sys.modules is the server's).
    repo = tmp_path / "repo"
    version = model(repo, "absolute", config("python", mode=mode), 7.0)
    beside, above = f"beside_{mode}", f"above_{mode}"
    (version / f"{beside}.py").write_text(HELPERS)
    (repo / "absolute" / f"{above}.py").write_text("SHIFT = 1.0\n")
    source = (
        textwrap.dedent(BACKEND)
        .replace(
            "from .helpers import factor_of", f"import {above}\nfrom {beside} import factor_of"
        )
        .replace("x * self.factor", f"x * self.factor + {above}.SHIFT")
    )
    (version / "model.py").write_text(source)
    with ServerThread(repo) as srv:
        out, where = ask(srv.http_url, "absolute")
        np.testing.assert_allclose(out, [8.0, 15.0])
        assert where["file"] == str(version / "model.py")
