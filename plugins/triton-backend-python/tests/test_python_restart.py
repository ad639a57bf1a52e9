"""A model process that dies is restarted; the server and the model keep serving.

Each way a model process dies in real life (the model calls ``os._exit``, a C extension
segfaults, something outside sends SIGKILL, as the OOM killer does) is tested while requests are
in flight, through the real tritonclient on a real server: the requests the process held fail
at once with the reason, the next requests are served by a new process, and the restart is
counted on the metrics endpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from triton_backend_python import _process_instance
from tritonclient.utils import InferenceServerException

from kernel.testing import RunningServer, ServerThread

OK = np.array([1.0, 0.0], dtype=np.float32)


def _infer(helpers: Any, served: RunningServer, values: np.ndarray[Any, Any]) -> Any:
    return helpers.grpc_infer(served, "python_fault", {"INPUT0": values})


def _pid(helpers: Any, served: RunningServer) -> int:
    return int(_infer(helpers, served, OK).as_numpy("PID")[0])


def _restarts(served: RunningServer) -> float:
    with urllib.request.urlopen(f"http://{served.metrics_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith('nv_python_stub_restarts{model="python_fault",version="1"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no restart counter for python_fault in:\n" + text)


def _outcome(call: Future[Any]) -> str:
    try:
        call.result(timeout=60)
    except InferenceServerException as exc:
        return str(exc.message())
    return "ok"


def _wait_served(helpers: Any, served: RunningServer, old_pid: int) -> int:
    """The pid serving after a restart (polls: the restart runs in the background)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            pid = _pid(helpers, served)
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        assert pid != old_pid
        return pid


@pytest.fixture
def fault_server(tmp_path: Path, helpers: Any) -> Any:
    repository = helpers.make_repository(tmp_path / "models", ["python_fault", "python_add_sub"])
    with ServerThread(repository) as served:
        yield served


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("exit", "exit code 3"),
        ("segfault", "killed by signal 11 (SIGSEGV)"),
        ("sigkill", "killed by signal 9 (SIGKILL)"),
    ],
)
def test_a_dead_model_process_is_restarted(
    fault_server: RunningServer, helpers: Any, how: str, reason: str
) -> None:
    served = fault_server
    first = _pid(helpers, served)
    assert first != os.getpid()
    assert _restarts(served) == 0
    with ThreadPoolExecutor(6) as pool:
        # Requests in flight: one slow one running, others queued behind it in the process.
        slow = [pool.submit(_infer, helpers, served, np.array([1.0, 1.0], np.float32))]
        time.sleep(0.3)
        waiting = [pool.submit(_infer, helpers, served, OK) for _ in range(3)]
        time.sleep(0.2)
        if how == "sigkill":
            os.kill(first, signal.SIGKILL)
        else:
            code = -1.0 if how == "exit" else -2.0
            waiting.append(pool.submit(_infer, helpers, served, np.array([code], np.float32)))
        outcomes = [_outcome(call) for call in [*slow, *waiting]]
    failed = [o for o in outcomes if o != "ok"]
    assert failed, outcomes
    for message in failed:
        assert f"Stub process 'python_fault_0_0' is not healthy ({reason})" in message, message

    second = _wait_served(helpers, served, first)
    assert _restarts(served) == 1
    with httpclient.InferenceServerClient(served.http_url) as client:
        assert client.is_server_live()
        assert client.is_model_ready("python_fault")
    # The server and its other models never stopped.
    a = np.arange(4, dtype=np.float32)
    result = helpers.http_infer(served, "python_add_sub", {"INPUT0": a, "INPUT1": a})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)

    # And again: every death is one more restart.
    os.kill(second, signal.SIGKILL)
    _wait_served(helpers, served, second)
    assert _restarts(served) == 2


def test_a_model_that_keeps_crashing_on_start_becomes_unavailable(
    fault_server: RunningServer, helpers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = fault_server
    monkeypatch.setattr(_process_instance, "RESTART_BACKOFF_SECONDS", (0.0, 0.05, 0.05, 0.05, 0.05))
    pid = _pid(helpers, served)
    (served.server.options.model_repositories[0] / "python_fault" / "crash_on_start").touch()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    with httpclient.InferenceServerClient(served.http_url) as client:
        while client.is_model_ready("python_fault"):
            assert time.monotonic() < deadline, "the model never became UNAVAILABLE"
            time.sleep(0.1)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert client.is_server_live()
        assert client.is_model_ready("python_add_sub")
    state = index["python_fault"]
    assert state["state"] == "UNAVAILABLE"
    assert "did not come back after 5 attempts" in state["reason"]
    assert "exit code 4" in state["reason"]
    with pytest.raises(InferenceServerException):
        _pid(helpers, served)


def test_the_model_process_looks_like_tritons_stub(
    tmp_path: Path, helpers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_stub_env"])
    monkeypatch.setenv("TRITON_KERNEL_TEST_MARKER", "inherited")
    with ServerThread(repository) as served:
        result = helpers.http_infer(
            served, "python_stub_env", {"INPUT0": np.array([1.0], np.float32)}
        )

    def texts(name: str) -> list[str]:
        return [v.decode() for v in result.as_numpy(name).reshape(-1)]

    assert texts("ARGV") == [""]
    assert texts("CWD") == [os.getcwd()]
    assert texts("NAME") == ["1.model"]
    assert texts("SIGNALS") == ["ignored", "ignored"]
    assert texts("ENV") == ["inherited"]
    assert result.as_numpy("UNITTEST").tolist() == [True]


def test_execution_mode_in_process_opts_a_model_out_of_isolation(
    tmp_path: Path, helpers: Any
) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_fault"])
    (repository / "in_server").mkdir()
    for item in (repository / "python_fault").iterdir():
        target = repository / "in_server" / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            target.write_text(
                item.read_text().replace('name: "python_fault"', 'name: "in_server"')
                + '\nparameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }\n'
            )
    with ServerThread(repository) as served:
        isolated = _pid(helpers, served)
        result = helpers.http_infer(served, "in_server", {"INPUT0": OK})
    assert isolated != os.getpid()  # the default: a process of its own
    assert int(result.as_numpy("PID")[0]) == os.getpid()  # opted in: the server's process
