"""Server settings: what ``kernel serve`` takes from its flags, as one plain object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kernel.manager import ModelControlMode

__all__ = ["ServerOptions", "example_repository"]


def example_repository() -> Path:
    """The bundled ``examples/model_repository`` (served when no repository is given)."""
    return Path(__file__).resolve().parent.parent / "examples" / "model_repository"


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
    http_max_url_bytes: int = 8 * 1024
    """Longer HTTP request targets are answered 414 (this server's ``--http-max-url-size``)."""
    http_max_header_bytes: int = 64 * 1024
    """Larger HTTP header sections are answered 431 (``--http-max-header-size``)."""
    http_max_header_count: int = 100
    """HTTP requests with more header fields are answered 431 (``--http-max-header-count``)."""
    http_header_timeout_secs: float = 30.0
    """An HTTP request's headers must arrive within this (``--http-header-timeout-secs``)."""
    http_idle_timeout_secs: float = 75.0
    """Idle or stalled HTTP connections are closed after this (``--http-idle-timeout-secs``)."""
    grpc_max_message_bytes: int = 2**31 - 1
    grpc_max_concurrent_streams: int = 100
    """Advertised SETTINGS_MAX_CONCURRENT_STREAMS of the gRPC port (streams past it are refused)."""
    grpc_max_header_list_size: int = 16 * 1024
    """Advertised and enforced SETTINGS_MAX_HEADER_LIST_SIZE (bytes, RFC 7541 sizes)."""
    grpc_keepalive_time_ms: int = 7_200_000
    grpc_keepalive_timeout_ms: int = 20_000
    grpc_keepalive_permit_without_calls: bool = False
    grpc_http2_max_pings_without_data: int = 2
    grpc_http2_min_recv_ping_interval_without_data_ms: int = 300_000
    grpc_http2_max_ping_strikes: int = 2
    """tritonserver's ``--grpc-keepalive-*`` / ``--grpc-http2-*`` flags, its defaults and grpc
    core's meaning (see ``kernel/frontends/grpc/_limits.py``)."""
    log_verbose: int = 0
