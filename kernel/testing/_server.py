"""Servers on free loopback ports, in a thread or in the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from kernel._options import ServerOptions
from kernel._server import InferenceServer

__all__ = ["RunningServer", "ServerThread", "run_server", "test_options", "write_model"]


def test_options(repository: Path | str | list[Path | str], **overrides: Any) -> ServerOptions:
    """Options for a test server: the given repositories, every endpoint on a free port.

    A test server keeps serving when a model fails to load (``exit_on_error=False``), so a
    test can look at the failure through the API; pass ``exit_on_error=True`` to test
    tritonserver's default, where the server then fails to start."""
    roots = repository if isinstance(repository, list) else [repository]
    options = ServerOptions(
        model_repositories=[Path(r) for r in roots],
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout_secs=10.0,
        exit_on_error=False,
    )
    return replace(options, **overrides)


@dataclass(frozen=True, slots=True)
class RunningServer:
    """Where a test server listens (``host:port`` strings, as tritonclient takes them)."""

    server: InferenceServer

    def url(self, name: str) -> str:
        """``host:port`` of frontend ``name`` (a built-in one or a plugin's)."""
        return self._url(name)

    def _url(self, name: str) -> str:
        port = self.server.ports.get(name)
        if port is None:
            raise RuntimeError(f"the {name} endpoint is disabled")
        return f"{self.server.options.address(name)}:{port}"

    @property
    def http_url(self) -> str:
        return self._url("http")

    @property
    def grpc_url(self) -> str:
        return self._url("grpc")

    @property
    def metrics_url(self) -> str:
        return self._url("metrics")


@contextlib.asynccontextmanager
async def run_server(
    repository: Path | str | list[Path | str], **overrides: Any
) -> AsyncIterator[RunningServer]:
    """Serve ``repository`` in the current event loop for the ``async with`` block."""
    server = InferenceServer(test_options(repository, **overrides))
    async with server.running():
        yield RunningServer(server)


def _event_loop() -> asyncio.AbstractEventLoop:
    """The loop ``kernel serve`` runs on: uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ServerThread:
    """Serve ``repository`` from a background thread for the ``with`` block.

    Startup errors are raised in the caller; the server is stopped (drained and finalized) on
    exit, and the thread joined.
    """

    def __init__(self, repository: Path | str | list[Path | str], **overrides: Any) -> None:
        self.options = test_options(repository, **overrides)
        self.server = InferenceServer(self.options)
        self._thread = threading.Thread(target=self._main, name="kernel-test-server", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_event_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported to the thread that waits in __enter__
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as tg:
            await tg.start(self.server.serve)
            self._started.set()

    def __enter__(self) -> RunningServer:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return RunningServer(self.server)

    def stop(self) -> None:
        """Stop the server and wait for the thread (also done on leaving the ``with``)."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.server.stop)
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            raise RuntimeError("the test server did not stop within 60 s")

    def call(self, fn: Any, *args: Any) -> Any:
        """Run the coroutine function ``fn(*args)`` on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result(timeout=120)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._error is not None and exc is None:
            raise self._error


def write_model(
    repository: Path,
    name: str,
    config: str | None,
    *,
    versions: tuple[int, ...] = (1,),
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write a model folder: ``config.pbtxt`` (when given), version folders and files.

    ``files`` maps paths inside the model folder (``"1/model.onnx"``) to contents.
    """
    model_dir = Path(repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    for version in versions:
        (model_dir / str(version)).mkdir(exist_ok=True)
    for relative, content in (files or {}).items():
        target = model_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return model_dir
