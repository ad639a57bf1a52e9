"""pytest plugin (entry point ``pytest11``): the ``kernel_server`` fixture factory.

Usage::

    def test_add(kernel_server, tmp_path):
        srv = kernel_server(tmp_path / "models")       # started on free loopback ports
        client = tritonclient.http.InferenceServerClient(srv.http_url)

Every server a test starts is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kernel.testing._server import RunningServer, ServerThread

__all__ = ["kernel_server"]


@pytest.fixture
def kernel_server() -> Iterator[Callable[..., RunningServer]]:
    """A factory starting a server (in a background thread) around a model repository."""
    with ExitStack() as stack:

        def start(repository: Path | str | list[Path | str], **overrides: Any) -> RunningServer:
            return stack.enter_context(ServerThread(repository, **overrides))

        yield start
