"""A server with the OpenAI frontend on a free port, serving the test models.

``openai_echo`` is the token-streaming model (decoupled); ``openai_once`` the same ``model.py``
answering once (``decoupled: False``); ``python_add_sub`` (the project's example) is a model
with no text mapping, which the frontend must not list or serve.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.frontends import FrontendConfig
from kernel.testing import RunningServer, ServerThread

MODELS = Path(__file__).parent / "models"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "model_repository"


def make_repository(root: Path) -> Path:
    """The test repository under ``root``."""
    shutil.copytree(MODELS / "openai_echo", root / "openai_echo")
    once = root / "openai_once"
    shutil.copytree(MODELS / "openai_echo", once)
    config = (once / "config.pbtxt").read_text()
    config = config.replace('name: "openai_echo"', 'name: "openai_once"')
    (once / "config.pbtxt").write_text(config.replace("decoupled: True", "decoupled: False"))
    shutil.copytree(EXAMPLES / "python_add_sub", root / "python_add_sub")
    return root


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a test module, every frontend on a free loopback port."""
    repository = make_repository(tmp_path_factory.mktemp("openai_repository"))
    with ServerThread(repository, frontends={"openai": FrontendConfig(port=0)}) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(openai_server: RunningServer) -> str:
    return f"http://{openai_server.url('openai')}/v1"
