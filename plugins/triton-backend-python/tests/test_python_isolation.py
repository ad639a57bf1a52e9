"""What only the process execution mode does: survive a model crash, run another environment."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kernel.testing import ServerThread

A = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)


@pytest.mark.parametrize("mode", ["in_process", "process"])
def test_failing_initialize_makes_only_that_model_unavailable(
    tmp_path: Path, helpers: Any, mode: str
) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_bad_init", "python_add_sub"])
    with ServerThread(repository, backend_config={"python": {"execution-mode": mode}}) as served:
        with httpclient.InferenceServerClient(served.http_url) as client:
            index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["python_bad_init"]["state"] == "UNAVAILABLE"
        assert "cannot load the weights" in index["python_bad_init"]["reason"]
        result = helpers.http_infer(served, "python_add_sub", {"INPUT0": A, "INPUT1": A})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - A)


def test_a_dying_model_process_fails_its_request_and_comes_back(
    tmp_path: Path, helpers: Any
) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_crash", "python_add_sub"])
    with ServerThread(repository) as served:
        result = helpers.http_infer(served, "python_crash", {"INPUT0": A})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A)

        with pytest.raises(InferenceServerException) as raised:
            helpers.http_infer(served, "python_crash", {"INPUT0": -A})
        assert "Stub process 'python_crash_0_0' is not healthy (exit code 3)" in (
            raised.value.message()
        )
        # The next request waits for the restarted process instead of failing.
        result = helpers.http_infer(served, "python_crash", {"INPUT0": A})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A)
        with httpclient.InferenceServerClient(served.http_url) as client:
            index = {m["name"]: m for m in client.get_model_repository_index()}
            assert index["python_crash"]["state"] == "READY"
            assert client.is_model_ready("python_add_sub")
        # The server and its other models kept serving.
        result = helpers.grpc_infer(served, "python_add_sub", {"INPUT0": A, "INPUT1": A})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + A)


def test_requests_in_flight_together_in_a_model_process(tmp_path: Path, helpers: Any) -> None:
    """Batches go to the model process ahead of time: each request still gets its own answer,
    and when the process dies every request it held gets the error, none hangs."""
    repository = helpers.make_repository(tmp_path / "models", ["python_crash"])
    with ServerThread(repository) as served:

        def infer(values: np.ndarray[Any, Any]) -> Any:
            return helpers.grpc_infer(served, "python_crash", {"INPUT0": values})

        values = [np.full(4, i + 1, np.float32) for i in range(24)]
        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(infer, v) for v in values]
            for call, sent in zip(calls, values, strict=True):
                np.testing.assert_array_equal(call.result(timeout=60).as_numpy("OUTPUT0"), sent)

            crash = [*values[:4], -A, *values[4:12]]
            calls = [pool.submit(infer, v) for v in crash]
            outcomes = []
            for call in calls:
                try:
                    outcomes.append(call.result(timeout=60).as_numpy("OUTPUT0"))
                except InferenceServerException as exc:
                    outcomes.append(exc.message())
        failed = [o for o in outcomes if isinstance(o, str)]
        assert failed  # at least the request that killed it
        for message in failed:
            assert "python_crash" in message
        # A new process serves the next requests.
        result = infer(A)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A)


def test_a_dying_stream_errors_its_open_requests(tmp_path: Path, helpers: Any) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_crash_stream"])
    with ServerThread(repository) as served:
        results = helpers.grpc_stream(
            served, "python_crash_stream", {"IN": np.array([1, 2], np.int32)}
        )
        assert results[0].as_numpy("OUT").tolist() == [1]
        assert isinstance(results[-1], InferenceServerException)
        assert "is not healthy (exit code 5)" in results[-1].message()
        results = helpers.grpc_stream(
            served, "python_crash_stream", {"IN": np.array([1, 2], np.int32)}
        )
        assert results[0].as_numpy("OUT").tolist() == [1]


def _environment(target: Path) -> None:
    """A bare virtual environment that sees numpy and nothing else of this one."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=60
    )
    libs = target / "shared-libs"
    libs.mkdir()
    numpy_dir = Path(np.__file__).resolve().parent
    for name in ("numpy", "numpy.libs"):
        source = numpy_dir.parent / name
        if source.exists():
            (libs / name).symlink_to(source, target_is_directory=True)
    version = sysconfig.get_python_version()
    site = target / "lib" / f"python{version}" / "site-packages"
    (site / "shared_libs.pth").write_text(str(libs) + "\n")


def test_execution_env_path_runs_that_interpreter(tmp_path: Path, helpers: Any) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_env_probe"])
    _environment(repository / "python_env_probe" / "env")
    with ServerThread(repository) as served:
        result = helpers.grpc_infer(served, "python_env_probe", {"INPUT0": A})
    executable = result.as_numpy("EXECUTABLE")[0].decode()
    assert executable.startswith(str(repository / "python_env_probe" / "env"))
    assert result.as_numpy("SEES_KERNEL").tolist() == [False]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A * 2)


def test_packed_environment_is_refused(tmp_path: Path, helpers: Any) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_env_probe"])
    config = repository / "python_env_probe" / "config.pbtxt"
    config.write_text(config.read_text().replace("/env", "/env.tar.gz"))
    with (
        ServerThread(repository) as served,
        httpclient.InferenceServerClient(served.http_url) as client,
    ):
        index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["python_env_probe"]["state"] == "UNAVAILABLE"
    assert "packed environment" in index["python_env_probe"]["reason"]


def test_unknown_execution_mode_is_refused(tmp_path: Path, helpers: Any) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_add_sub"])
    config = repository / "python_add_sub" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + '\nparameters { key: "EXECUTION_MODE" value { string_value: "threads" } }\n'
    )
    with (
        ServerThread(repository) as served,
        httpclient.InferenceServerClient(served.http_url) as client,
    ):
        index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["python_add_sub"]["state"] == "UNAVAILABLE"
    assert "unknown execution mode 'threads'" in index["python_add_sub"]["reason"]
