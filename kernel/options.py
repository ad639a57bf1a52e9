"""Server settings: what ``kernel serve`` takes from its flags, as one plain object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kernel.manager import ModelControlMode

__all__ = ["ServerOptions", "example_repository"]


def example_repository() -> Path:
    """The example model repository, served when no repository is given.

    A wheel install ships it as package data (``kernel/_example_repository``, see setup.py); a
    source checkout (editable install) serves ``examples/model_repository`` in place.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "_example_repository"
    if packaged.is_dir():
        return packaged
    return here.parent / "examples" / "model_repository"


@dataclass(slots=True)
class ServerOptions:
    """Everything a server needs to know; defaults are tritonserver's."""

    model_repositories: list[Path] = field(default_factory=lambda: [example_repository()])
    model_control_mode: ModelControlMode = ModelControlMode.NONE
    load_models: list[str] = field(default_factory=list)
    repository_poll_secs: float = 15.0
    host: str = "127.0.0.1"
    http_port: int | None = 8000
    """``None`` disables the endpoint; 0 picks a free port."""
    grpc_port: int | None = 8001
    metrics_port: int | None = 8002
    strict_readiness: bool = True
    exit_timeout_secs: float = 30.0
    server_name: str = "triton"
    auto_complete_config: bool = True
    backend_config: dict[str, dict[str, str]] = field(default_factory=dict)
    http_max_input_bytes: int = 64 * 1024 * 1024
    """Requests with a larger body are refused (tritonserver's ``--http-max-input-size``)."""
    grpc_max_message_bytes: int = 2**31 - 1
    log_verbose: int = 0
