"""A global ``--backend-config <setting>=<value>`` reaches every backend, as tritonserver's does:
global settings first, the backend's own settings winning where both name a key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kernel._cli import build_parser
from kernel._registry import backend_settings
from kernel._serve_command import options_from_args
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def test_global_and_specific_settings_merge() -> None:
    config = {"": {"a": "global", "b": "global"}, "onnxruntime": {"b": "own"}}
    assert backend_settings(config, "onnxruntime") == {"a": "global", "b": "own"}
    assert backend_settings(config, "pytorch") == {"a": "global", "b": "global"}
    assert backend_settings({}, "pytorch") == {}


def test_the_command_line_keeps_global_settings_apart() -> None:
    args, _ = build_parser().parse_known_args(
        [
            "serve",
            "--backend-config=default-max-batch-size=2",
            "--backend-config=onnxruntime,default-max-batch-size=16",
        ]
    )
    options = options_from_args(args)
    assert options.backend_config == {
        "": {"default-max-batch-size": "2"},
        "onnxruntime": {"default-max-batch-size": "16"},
    }
    assert backend_settings(options.backend_config, "pytorch") == {"default-max-batch-size": "2"}


async def test_a_global_setting_reaches_backend_and_model(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    add_model(repo, "m", kt_config("identity"))
    options = {**NO_ENDPOINTS, "backend_config": {"": {"lifecycle_log": str(log)}}}
    async with run_server(repo, **options) as srv:
        assert srv.server.is_model_ready("m")
        version = srv.server.manager.route("m", -1)
        assert version.context.backend_config == {"lifecycle_log": str(log)}
    assert log.read_text().splitlines()[0] == "backend.initialize kerneltest"


async def test_the_backends_own_setting_wins(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    unused, used = tmp_path / "global.log", tmp_path / "own.log"
    add_model(repo, "m", kt_config("identity"))
    options = {
        **NO_ENDPOINTS,
        "backend_config": {
            "": {"lifecycle_log": str(unused)},
            "kerneltest": {"lifecycle_log": str(used)},
        },
    }
    async with run_server(repo, **options):
        pass
    assert not unused.exists()
    assert "backend.initialize kerneltest" in used.read_text()
