"""Shared fixtures of the kernel's own tests."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from kernel_test_backends.configs import REPEAT

from kernel.testing import write_model


def kerneltest_config(
    behaviour: str = "identity",
    *,
    backend: str = "kerneltest",
    max_batch_size: int = 8,
    count: int = 1,
    kind: str = "KIND_CPU",
    datatype: str = "TYPE_FP32",
    dims: str = "[ 4 ]",
    extra: str = "",
    parameters: dict[str, str] | None = None,
) -> str:
    """A config.pbtxt for the ``kerneltest`` backends with two inputs and two outputs."""
    params = {"behaviour": behaviour, **(parameters or {})}
    param_text = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    return f"""
backend: "{backend}"
max_batch_size: {max_batch_size}
input [
  {{ name: "INPUT0" data_type: {datatype} dims: {dims} }},
  {{ name: "INPUT1" data_type: {datatype} dims: {dims} }}
]
output [
  {{ name: "OUTPUT0" data_type: {datatype} dims: {dims} }},
  {{ name: "OUTPUT1" data_type: {datatype} dims: {dims} }}
]
instance_group [ {{ count: {count} kind: {kind} }} ]
{param_text}
{extra}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository folder."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def add_model() -> Callable[..., Path]:
    """``add_model(repo, name, config_text, versions=(1,), files=None)``."""
    return write_model


@pytest.fixture
def kt_config() -> Callable[..., str]:
    """The :func:`kerneltest_config` builder."""
    return kerneltest_config


@pytest.fixture
def repeat_config() -> str:
    """A decoupled ``kerneltest`` model: one response per element of IN, then final."""
    return REPEAT


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files made at test time with ``trustme``: a CA; a server certificate for 127.0.0.1 and
    localhost signed by it (``cert``, ``key``); a client certificate signed by it (``client_cert``,
    ``client_key``); and a client certificate from another CA (``stranger_cert``/``_key``)."""
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example.com")
    stranger = other_ca.issue_cert("stranger.example.com")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "stranger_cert": stranger.cert_chain_pems[0],
        "stranger_key": stranger.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return paths


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, for a process that takes its ports on the
    command line (another process may take one before it binds: retry on that)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(name="free_ports", scope="session")
def free_ports_fixture() -> Callable[[int], list[int]]:
    """The :func:`free_ports` function."""
    return free_ports


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Nginx:
    """A real nginx, a child process of the test, with its own configuration, logs and pid file in
    ``prefix`` (``prefix / "error.log"``: what it logged)."""

    process: subprocess.Popen[bytes]
    prefix: Path
    ports: dict[str, int]
    """The port of each listener the test named."""

    def address(self, listener: str) -> str:
        """``127.0.0.1:port`` of ``listener``."""
        return f"127.0.0.1:{self.ports[listener]}"

    def stop(self) -> None:
        stop_process(self.process)


class NginxStarter:
    """``start_nginx(template, prefix, values, listeners)``: nginx with ``values`` and a free port
    for each of ``listeners`` filled into the template's ``@NAME@`` placeholders, once it listens
    on every one of them (tried three times: a free port may be taken by another process before
    nginx binds it).

    :raises RuntimeError: with nginx's error log, when it exits or does not listen in 20 s.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(
        self, template: Path, prefix: Path, values: dict[str, str], listeners: Sequence[str]
    ) -> Nginx:
        for attempt in range(3):
            ports = dict(zip(listeners, free_ports(len(listeners)), strict=True))
            try:
                return self._start(template, prefix, values, ports)
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(
        self, template: Path, prefix: Path, values: dict[str, str], ports: dict[str, int]
    ) -> Nginx:
        config = template.read_text()
        for name, value in (values | {k: str(v) for k, v in ports.items()}).items():
            config = config.replace(f"@{name}@", value)
        assert re.search(r"@[A-Z_]+@", config) is None, "a placeholder without a value"
        (prefix / "nginx.conf").write_text(config)
        error_log = prefix / "error.log"
        error_log.unlink(missing_ok=True)  # only this attempt's lines are judged
        command = [self.binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        process = subprocess.Popen(
            [*command, "-e", str(error_log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        waiting = list(ports.values())
        while waiting:  # bounded: until nginx listens on every port, or it exited, or 20 s passed
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError(f"nginx did not start: {error_log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
                waiting.pop(0)
            except OSError:
                time.sleep(0.05)
        return Nginx(process, prefix, ports)


@pytest.fixture(scope="session")
def start_nginx() -> NginxStarter:
    """A :class:`NginxStarter` for the Debian package's nginx (the test command installs it)."""
    path = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if path is None:
        pytest.fail(
            "nginx is not installed: the test command installs it (apt-get install -y nginx)"
        )
    return NginxStarter(path)
