"""The example frontend plugin, installed as a distribution: found by its entry point, served by
``kernel serve --plaintext-port``, streaming a decoupled Python model's words."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel.frontends import FrontendConfig
from kernel.testing import ServerThread, write_model

WORDS_MODEL = b'''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Sends each word of the text back as its own response."""

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            text = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy()[0].decode()
            for word in text.split():
                word_out = np.array([(word + " ").encode()], dtype=np.object_)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("words", word_out)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

WORDS_CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "prompt" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "words" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

FLAGS = ["--plaintext-input", "prompt", "--plaintext-output", "words"]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    write_model(tmp_path, "words", WORDS_CONFIG, files={"1/model.py": WORDS_MODEL})
    return tmp_path


def _post(url: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def test_entry_point_is_installed() -> None:
    from kernel.frontends import load_frontend_plugins

    plugins, failed = load_frontend_plugins({"plaintext"})
    assert failed == {}
    assert plugins["plaintext"].default_port is None


def test_served_through_server_options(repository: Path) -> None:
    frontends = {"plaintext": FrontendConfig(port=0, args=FLAGS)}
    with ServerThread(repository, grpc_port=None, frontends=frontends) as running:
        status, headers, body = _post(running.url("plaintext"), "/words", b"one two three")
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"one two three "
        status, _, body = _post(running.url("plaintext"), "/nosuch", b"x")
        assert status == 404 and b"unknown model" in body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_kernel_serve_takes_its_flags(repository: Path) -> None:
    port = _free_port()
    command = [
        *(sys.executable, "-m", "kernel"),
        *("serve", "--model-repository", str(repository), "--host", "127.0.0.1"),
        *("--allow-grpc", "false", "--allow-metrics", "false", "--http-port", "0"),
        *("--plaintext-port", str(port), *FLAGS),
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:
            try:
                status, _, body = _post(f"127.0.0.1:{port}", "/words", b"a b")
                assert status == 200
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                time.sleep(0.2)
        assert body == b"a b "
    finally:
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=60)
    assert server.returncode == 0, errors
    assert f"started plaintext endpoint at 127.0.0.1:{port}" in errors
