"""Frontends as plugins: the contract, the built-in three through the entry-point group, a
plugin's flags, failures that leave the other frontends serving, and ``kernel frontends``."""

from __future__ import annotations

import argparse
import http.client
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import kernel.frontends
from kernel._cli import build_parser
from kernel._errors import KernelError
from kernel._frontend_plugins import load_frontend_plugins, plugin_arguments
from kernel._server import InferenceServer
from kernel.frontends import (
    FrontendConfig,
    HttpLimits,
    HttpListener,
    HttpRequest,
    Reply,
    StreamingReply,
)
from kernel.testing import ServerThread


class _EchoApp:
    max_body = 1024

    def __init__(self, greeting: str, server: InferenceServer) -> None:
        self.greeting = greeting
        self.server = server

    async def handle(self, request: HttpRequest) -> Reply | StreamingReply:
        if request.path == "/ready":
            return Reply(200, [], [b"ready" if self.server.is_ready() else b"not ready"])
        if request.path == "/stream":
            words = self.greeting.split()

            async def chunks() -> AsyncIterator[bytes]:
                for word in words:
                    yield word.encode() + b"\n"

            return StreamingReply(200, [(b"content-type", b"text/plain")], chunks())
        return Reply(200, [(b"content-type", b"text/plain")], [self.greeting.encode()])


class _EchoFrontend:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.listener: HttpListener | None = None
        self.stopped = False

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        app = _EchoApp(self.greeting, server)
        self.listener = HttpListener(app, HttpLimits.from_options(server.options, max_body=1024))
        await self.listener.start(sock)

    async def stop(self, timeout: float) -> None:
        self.stopped = True
        if self.listener is not None:
            await self.listener.stop(timeout)


class EchoPlugin:
    name = "echo"
    default_port: int | None = None
    description = "answers every request with its greeting"

    def __init__(self, *, fail: str = "") -> None:
        self.fail = fail
        self.created: list[_EchoFrontend] = []

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--echo-greeting", default="hello")

    def create(self, args: argparse.Namespace) -> _EchoFrontend:
        if self.fail == "create":
            raise RuntimeError("no greeting today")
        frontend = _EchoFrontend(args.echo_greeting)
        if self.fail == "start":

            async def refuse(server: InferenceServer, sock: socket.socket) -> None:
                raise OSError("the start failed")

            frontend.start = refuse  # type: ignore[method-assign]
        self.created.append(frontend)
        return frontend


def _get(url: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def test_public_surface() -> None:
    assert sorted(kernel.frontends.__all__) == [
        "Frontend",
        "FrontendConfig",
        "FrontendPlugin",
        "HttpLimits",
        "HttpListener",
        "HttpRequest",
        "Reply",
        "RequestHandler",
        "StreamingReply",
        "grpc_status",
        "http_status",
        "load_frontend_plugins",
    ]
    for name in kernel.frontends.__all__:
        assert getattr(kernel.frontends, name).__name__ == name
    with pytest.raises(AttributeError, match="NoSuch"):
        _ = kernel.frontends.NoSuch  # type: ignore[attr-defined]


def test_builtin_frontends_register_through_the_entry_point_group() -> None:
    found = {ep.name: ep for ep in entry_points(group="kernel.frontends")}
    for name in ("http", "grpc", "metrics"):
        assert found[name].dist is not None and found[name].dist.name == "triton-kernel"
    plugins, failed = load_frontend_plugins({"http", "grpc", "metrics"})
    assert failed == {}
    assert {n: p.default_port for n, p in plugins.items()} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }


def test_plugin_frontend_serves_beside_the_builtin_ones(repo: Path) -> None:
    plugin = EchoPlugin()
    config = FrontendConfig(port=0, args=["--echo-greeting", "good morning"], plugin=plugin)
    with ServerThread(repo, frontends={"echo": config}) as running:
        assert set(running.server.ports) == {"http", "grpc", "metrics", "echo"}
        assert _get(running.url("echo"), "/")[:2] == (200, b"good morning")
        status, body, headers = _get(running.url("echo"), "/stream")
        assert (status, body) == (200, b"good\nmorning\n")
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in {k.lower() for k in headers}
        assert _get(running.url("echo"), "/ready")[1] == b"ready"
        assert _get(running.http_url, "/v2/health/ready")[0] == 200
        created = plugin.created[0]
    assert created.stopped


@pytest.mark.parametrize("fail", ["create", "start"])
def test_failed_plugin_frontend_leaves_the_others_serving(repo: Path, fail: str) -> None:
    config = FrontendConfig(port=0, plugin=EchoPlugin(fail=fail))
    with ServerThread(repo, grpc_port=None, frontends={"echo": config}) as running:
        assert "echo" not in running.server.ports
        reason = running.server.frontend_errors["echo"]
        assert ("no greeting today" if fail == "create" else "the start failed") in reason
        assert _get(running.http_url, "/v2/health/ready")[0] == 200


@pytest.mark.parametrize("fail", ["create", "start"])
def test_exit_on_frontend_error_stops_the_server(repo: Path, fail: str) -> None:
    config = FrontendConfig(port=0, plugin=EchoPlugin(fail=fail))
    server = ServerThread(
        repo, grpc_port=None, frontends={"echo": config}, exit_on_frontend_error=True
    )
    with pytest.raises(BaseException) as caught, server:
        pass
    assert isinstance(caught.value, KernelError | BaseExceptionGroup)
    assert "the echo frontend failed" in repr(caught.value)


def test_port_in_use_is_reported_and_the_others_serve(repo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = FrontendConfig(port=port, plugin=EchoPlugin())
        with ServerThread(repo, grpc_port=None, frontends={"echo": config}) as running:
            assert f"cannot listen on 127.0.0.1:{port}" in running.server.frontend_errors["echo"]
            assert _get(running.http_url, "/v2/health/live")[0] == 200


def test_unknown_frontend_and_bad_flags(repo: Path) -> None:
    with ServerThread(repo, grpc_port=None, frontends={"nosuch": FrontendConfig()}) as running:
        assert running.server.frontend_errors == {"nosuch": "no such frontend is installed"}
    config = FrontendConfig(args=["--echo-colour", "red"], plugin=EchoPlugin())
    with ServerThread(repo, grpc_port=None, frontends={"echo": config}) as running:
        assert (
            "unknown echo frontend flag(s): --echo-colour"
            in (running.server.frontend_errors["echo"])
        )


def test_kernel_serve_declares_a_plugins_flags() -> None:
    parser = build_parser({"echo": EchoPlugin()})
    args = parser.parse_args(["serve", "--echo-port", "0", "--echo-greeting", "hi"])
    assert (args.echo_port, args.echo_address, args.echo_greeting) == (0, None, "hi")
    assert parser.parse_args(["serve"]).echo_port is None  # default_port None: off
    assert parser.parse_args(["serve"]).exit_on_frontend_error is False
    from kernel._serve_command import options_from_args

    plugins = {"echo": EchoPlugin()}
    options = options_from_args(parser.parse_args(["serve", "--echo-port", "0"]), plugins)
    assert list(options.frontends) == ["echo"] and options.frontends["echo"].port == 0
    off = parser.parse_args(["serve", "--echo-port", "0", "--allow-echo", "false"])
    assert options_from_args(off, plugins).frontends == {}


def test_plugin_arguments_prefix() -> None:
    parser = argparse.ArgumentParser()
    plugin_arguments(parser, EchoPlugin())
    flags = {a for action in parser._actions for a in action.option_strings}
    assert {"--echo-port", "--echo-address", "--allow-echo", "--echo-greeting"} <= flags


def test_kernel_frontends_lists_the_installed_ones() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from kernel._cli import main; main(['frontends'])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Default port" in lines[1]
    rows = {line.split("|")[1].strip(): line for line in lines[3:-1]}
    assert "| triton-kernel " in rows["http"] and "| 8000 " in rows["http"]
    assert "| 8001 " in rows["grpc"] and "| 8002 " in rows["metrics"]
