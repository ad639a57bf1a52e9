"""Logs as an operator reads them: ``--log-file``, ``--log-format``, the level flags, model
names on model lines, and load progress."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel import _manager as manager_module
from kernel._log_output import KernelLogHandler, model_of
from kernel.testing import ServerThread, write_model

KERNEL = [sys.executable, "-m", "kernel"]

_PYTHON_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log_info("hello from initialize")
        pb_utils.Logger.log_warn("careful from initialize")

    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[]) for _ in requests]
"""

_PYTHON_CONFIG = """
name: "chatty"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def _record(name: str, level: int, message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _handler(**settings: object) -> tuple[KernelLogHandler, io.StringIO]:
    stream = io.StringIO()
    return KernelLogHandler(stream, settings), stream


def test_default_and_iso8601_lines_are_tritonservers_shape() -> None:
    handler, _ = _handler()
    line = handler.format(_record("kernel.model.m", logging.WARNING, "slow"))
    assert re.fullmatch(r"W\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ kernel\.model\.m\] slow", line)
    handler.apply({"log_format": "ISO8601"})
    line = handler.format(_record("kernel.manager", logging.ERROR, "bad"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ E \d+ kernel\.manager\] bad", line)


def test_json_lines_carry_model_and_request_id() -> None:
    handler, _ = _handler(log_format="json")
    line = json.loads(
        handler.format(_record("kernel.model.m.inst_0", logging.INFO, "hi", request_id="r-1"))
    )
    assert line["level"] == "INFO"
    assert line["logger"] == "kernel.model.m.inst_0"
    assert line["model"] == "m"
    assert line["message"] == "hi"
    assert line["request_id"] == "r-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["time"])
    plain = json.loads(handler.format(_record("kernel.server", logging.DEBUG, "x")))
    assert plain["model"] is None and "request_id" not in plain
    assert plain["level"] == "VERBOSE"
    assert model_of(_record("kernel.manager", logging.INFO, "x", model="other")) == "other"


def test_json_line_keeps_a_traceback_inside_the_one_object() -> None:
    handler, _ = _handler(log_format="json")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "kernel.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    text = handler.format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["message"]


def test_levels_are_enabled_one_by_one_as_in_tritonserver() -> None:
    handler, stream = _handler(log_info=False, log_warning=True, log_error=False)
    logger = logging.getLogger("kernel.test_logs_levels")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("verbose line")
        logger.info("info line")
        logger.warning("warning line")
        logger.error("error line")
        handler.apply({"log_verbose_level": 1, "log_error": True})
        logger.debug("verbose now")
        logger.error("error now")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert "warning line" in text and "verbose now" in text and "error now" in text
    assert "info line" not in text and "error line" not in text and "verbose line" not in text


def test_log_settings_api_reflects_the_flags(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    with ServerThread(
        tmp_path,
        log_format="json",
        log_info=False,
        log_warning=True,
        log_error=True,
        log_verbose=1,
        log_file=log_file,
    ) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            expected = {
                "log_file": str(log_file),
                "log_info": False,
                "log_warning": True,
                "log_error": True,
                "log_verbose_level": 1,
                "log_format": "json",
            }
            assert http.get_log_settings() == expected
            settings = grpc.get_log_settings(as_json=True)["settings"]
            assert settings["log_format"] == {"string_param": "json"}
            assert settings["log_file"] == {"string_param": str(log_file)}
            assert http.update_log_settings({"log_format": "ISO8601"})["log_format"] == "ISO8601"
        finally:
            http.close()
            grpc.close()
            logging.getLogger("kernel").setLevel(logging.NOTSET)


def _serve_until(
    repo: Path, extra: list[str], log_file: Path, wanted: str, timeout: float = 90
) -> str:
    """Run ``kernel serve`` until ``wanted`` shows in the log file; returns the file's text."""
    proc = subprocess.Popen(
        [
            *KERNEL,
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--log-file",
            str(log_file),
            *extra,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_file.read_text() if log_file.exists() else ""
            if wanted in text:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    text = log_file.read_text()
    assert wanted in text, (text, stderr)
    # the status table stays on stderr; log lines do not go there
    assert "| chatty" in stderr
    assert "hello from initialize" not in stderr
    return text


@pytest.fixture
def chatty_repo(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "repo"
    write_model(repo, "chatty", _PYTHON_CONFIG)
    (repo / "chatty" / "1" / "model.py").write_text(_PYTHON_MODEL)
    yield repo


@pytest.mark.parametrize("form", ["default", "ISO8601", "json"])
def test_log_file_gets_model_lines_with_model_name_and_load_progress(
    chatty_repo: Path, tmp_path: Path, form: str
) -> None:
    log_file = tmp_path / "server.log"
    log_file.write_text("an earlier line\n")
    text = _serve_until(chatty_repo, ["--log-format", form], log_file, "READY: chatty:1")
    assert text.startswith("an earlier line\n"), "--log-file appends"
    lines = text.splitlines()[1:]
    if form == "json":
        objects = [json.loads(line) for line in lines]
        model_lines = [o for o in objects if o["message"] == "hello from initialize"]
        assert model_lines and model_lines[0]["model"] == "chatty"
        assert model_lines[0]["level"] == "INFO"
        warn = [o for o in objects if o["message"] == "careful from initialize"]
        assert warn and warn[0]["level"] == "WARNING" and warn[0]["model"] == "chatty"
        starts = [o for o in objects if o["message"] == "loading: chatty:1"]
        assert starts and starts[0]["model"] == "chatty"
        ready = [o for o in objects if o["message"].startswith("READY: chatty:1 loaded in ")]
        assert ready and ready[0]["model"] == "chatty"
    else:
        line = next(x for x in lines if x.endswith("hello from initialize"))
        assert "kernel.model.chatty" in line
        if form == "ISO8601":
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ I \d+ ", line)
        else:
            assert re.match(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ ", line)
        assert any(x.endswith("loading: chatty:1") for x in lines)
        assert any(re.search(r"READY: chatty:1 loaded in \d+\.\d\ds$", x) for x in lines)


def test_log_info_false_keeps_warnings(chatty_repo: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    text = _serve_until(chatty_repo, ["--log-info", "false"], log_file, "careful from initialize")
    assert "hello from initialize" not in text
    assert "READY: chatty:1" not in text


def test_serve_refuses_an_unopenable_log_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [*KERNEL, "serve", "--log-file", str(tmp_path / "missing" / "x.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "cannot open --log-file" in out.stderr


async def test_a_slow_load_says_so_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The 10 s progress line, with the interval shortened: a load that takes several
    intervals logs a 'still loading' line for each, then READY with the time it took."""

    class SlowVersion:
        async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            await anyio.sleep(0.35)
            task_status.started()

    class FailingVersion:
        async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            await anyio.sleep(0.01)
            raise RuntimeError("no weights")

    monkeypatch.setattr(manager_module, "LOAD_PROGRESS_SECS", 0.1)
    with caplog.at_level(logging.INFO, logger="kernel.manager"):
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                await manager_module._start_with_progress(tg, SlowVersion(), "slow", 3)  # type: ignore[arg-type]
                with pytest.raises(RuntimeError):
                    await manager_module._start_with_progress(tg, FailingVersion(), "bad", 1)  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "loading: slow:3"
    still = [m for m in messages if m.startswith("still loading: slow:3")]
    assert 2 <= len(still) <= 4
    assert any(re.fullmatch(r"READY: slow:3 loaded in 0\.\d\ds", m) for m in messages)
    assert any(
        re.fullmatch(r"failed to load: bad:1 after \d\.\d\ds: no weights", m) for m in messages
    )
    assert all(getattr(r, "model", None) in ("slow", "bad") for r in caplog.records)


_EXECUTE_LOGGER = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        pb_utils.Logger.log_info("executing")
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())
                ]
            )
            for r in requests
        ]
"""


@pytest.mark.parametrize("mode", ["in_process", "process"])
def test_json_line_of_a_model_during_execute_names_the_request(tmp_path: Path, mode: str) -> None:
    import numpy as np

    from kernel._log_output import configure_logging

    repo = tmp_path / "repo"
    write_model(
        repo,
        "chatty",
        _PYTHON_CONFIG
        + f'parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}\n',
    )
    (repo / "chatty" / "1" / "model.py").write_text(_EXECUTE_LOGGER)
    log_file = tmp_path / "server.log"
    root = logging.getLogger()
    before = list(root.handlers), root.level
    configure_logging({"log_format": "json"}, log_file)
    try:
        with ServerThread(repo, log_format="json") as server:
            client = httpclient.InferenceServerClient(server.http_url)
            try:
                tensor = httpclient.InferInput("IN", [1], "FP32")
                tensor.set_data_from_numpy(np.ones(1, np.float32))
                client.infer("chatty", [tensor], request_id="req-42")
            finally:
                client.close()
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(before[1])
        logging.getLogger("kernel").setLevel(logging.NOTSET)
        from kernel import _log_output

        _log_output.json_lines = False
    objects = [json.loads(line) for line in log_file.read_text().splitlines()]
    line = next(o for o in objects if o["message"] == "executing")
    assert line["model"] == "chatty"
    if mode == "in_process":
        assert line["request_id"] == "req-42"
