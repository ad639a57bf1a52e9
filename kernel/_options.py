"""Server settings: what ``kernel serve`` takes from its flags, as one plain object."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel._frontend_plugins import FrontendPlugin

__all__ = [
    "FrontendConfig",
    "ModelControlMode",
    "ServerOptions",
    "TlsSettings",
    "example_repository",
]


class ModelControlMode(enum.Enum):
    """tritonserver's ``--model-control-mode``."""

    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


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


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS on one listener (tritonserver's ``--grpc-use-ssl*`` flags; ``--http-use-ssl*`` here).

    Paths are checked when the endpoint starts (:mod:`kernel.frontends._tls`).
    """

    cert: Path | None = None
    """PEM server certificate (chain), ``--grpc-server-cert``."""
    key: Path | None = None
    """PEM private key of ``cert``, unencrypted, ``--grpc-server-key``."""
    root_cert: Path | None = None
    """PEM certificate(s) of the authority that signs client certificates, ``--grpc-root-cert``."""
    mutual: bool = False
    """Require and verify a client certificate (``--grpc-use-ssl-mutual``)."""


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    """A plugin frontend to serve, as ``kernel serve --<name>-port PORT ...`` would.

    For embedders and tests: ``ServerOptions(frontends={"openai": FrontendConfig(port=0)})``
    serves the installed ``openai`` frontend on a free port (``server.ports["openai"]``).
    """

    port: int = 0
    """0 picks a free port."""
    address: str | None = None
    """``None`` listens on :attr:`ServerOptions.host`."""
    args: Sequence[str] | argparse.Namespace = ()
    """The plugin's own flags as on the command line (``["--openai-model", "m"]``), parsed
    against what its ``add_arguments`` declares; or an already parsed namespace (what
    ``kernel serve`` hands over)."""
    plugin: FrontendPlugin | None = None
    """Use this plugin object instead of the installed entry point of that name (tests)."""


@dataclass(slots=True)
class ServerOptions:
    """Everything a server needs to know; defaults are tritonserver's."""

    model_repositories: list[Path] = field(default_factory=lambda: [example_repository()])
    model_control_mode: ModelControlMode = ModelControlMode.NONE
    load_models: list[str] = field(default_factory=list)
    repository_poll_secs: float = 15.0
    host: str = "0.0.0.0"
    """Where every endpoint listens unless its own address is set: all interfaces, as
    tritonserver (``--host 127.0.0.1`` keeps a server on loopback)."""
    http_address: str | None = None
    """``--http-address``; ``None`` listens on :attr:`host`."""
    grpc_address: str | None = None
    """``--grpc-address``; ``None`` listens on :attr:`host`."""
    metrics_address: str | None = None
    """``--metrics-address``; ``None`` listens where HTTP does, as tritonserver."""
    reuse_http_port: bool = False
    """``--reuse-http-port``: bind with ``SO_REUSEPORT`` so several servers share the port."""
    reuse_grpc_port: bool = False
    """``--reuse-grpc-port``: the same for the gRPC port."""
    http_port: int | None = 8000
    """``None`` disables the endpoint; 0 picks a free port."""
    grpc_port: int | None = 8001
    metrics_port: int | None = 8002
    strict_readiness: bool = True
    exit_timeout_secs: float = 30.0
    exit_on_error: bool = True
    """tritonserver's ``--exit-on-error``: a model that fails to load at start stops the
    server before it serves (a later load failure never does)."""
    backend_directory: Path | None = None
    """tritonserver's ``--backend-directory``: Python-based backends as ``DIR/<name>/model.py``
    (after the installed ones)."""
    server_name: str = "triton"
    auto_complete_config: bool = True
    backend_config: dict[str, dict[str, str]] = field(default_factory=dict)
    rate_limit: str = "off"
    """tritonserver's ``--rate-limit``: ``off`` or ``execution_count``."""
    rate_limit_resources: dict[tuple[str, int | str], int] = field(default_factory=dict)
    """``--rate-limit-resource <name>:<count>[:<device>]``: ``(name, device) -> count``, the
    device ``"global"`` when none is given."""
    cache_config: dict[str, dict[str, str]] = field(default_factory=dict)
    """tritonserver's ``--cache-config <cache>,<key>=<value>``: ``local,size=<bytes>`` enables
    the in-process response cache for models with ``response_cache { enable: true }``."""
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
    core's meaning (see ``kernel/frontends/_grpc/_limits.py``)."""
    log_verbose: int = 0
    model_config_name: str = ""
    """``--model-config-name``: load ``<model>/configs/<name>.pbtxt`` where it exists."""
    model_load_retry_count: int = 0
    """``--model-load-retry-count``: tries after a version's first failed load."""
    metrics_interval_ms: float = 2000.0
    """``--metrics-interval-ms``: how often polled metrics are collected."""
    allow_gpu_metrics: bool = True
    """``--allow-gpu-metrics``: Triton's ``nv_gpu_*`` families through NVML (nvidia-ml-py)
    when a GPU is present; false never touches NVML."""
    allow_client_shm: bool = True
    """``--allow-client-shm``: false refuses the shared-memory APIs (register, status,
    unregister) and inference through shared memory."""
    http_restricted_api: dict[str, tuple[str, str]] = field(default_factory=dict)
    """``--http-restricted-api``: API group -> (header, value) a request to it must carry."""
    grpc_restricted_protocol: dict[str, tuple[str, str]] = field(default_factory=dict)
    """``--grpc-restricted-protocol``: the same for gRPC (the header is
    ``triton-grpc-protocol-<key>``)."""
    http_header_forward_pattern: str = ""
    """``--http-header-forward-pattern``: headers whose name matches (case-insensitive unless
    the pattern says ``(?-i)``) reach the model as string request parameters."""
    grpc_header_forward_pattern: str = ""
    """``--grpc-header-forward-pattern``: the same for gRPC metadata."""
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    """tritonserver's ``--log-info/--log-warning/--log-error``: each level on or off."""
    log_format: str = "default"
    """``--log-format``: ``default``, ``ISO8601`` (tritonserver's) or ``json`` (one object a
    line)."""
    log_file: Path | None = None
    """``--log-file``: lines are appended to it instead of stderr (never settable over the
    network)."""
    metrics_config: dict[str, str] = field(default_factory=dict)
    """tritonserver's ``--metrics-config <key>=<value>``: ``summary_latencies``,
    ``histogram_latencies``, ``summary_quantiles`` (see kernel/_latency.py)."""
    trace_settings: dict[str, list[str]] = field(default_factory=dict)
    """``--trace-config``'s global settings in the trace settings API's form
    (``{"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"], ...}``)."""
    trace_file: Path | None = None
    """``--trace-config triton,file=PATH``: where Triton-mode traces go; no tracing without it."""
    trace_mode: str = "triton"
    """``--trace-config mode=triton|opentelemetry``: Triton's JSON files or OpenTelemetry spans
    exported over OTLP/HTTP (needs ``triton-kernel[otel]``)."""
    trace_opentelemetry: list[tuple[str, str]] = field(default_factory=list)
    """``--trace-config opentelemetry,<key>=<value>`` in order: ``url``, ``resource``
    (``key=value``, repeatable), ``bsp_max_queue_size``, ``bsp_schedule_delay``,
    ``bsp_max_export_batch_size`` (see kernel/_otel.py)."""
    grpc_tls: TlsSettings | None = None
    """TLS on the gRPC port; ``None`` serves plain HTTP/2 (tritonserver's default)."""
    http_tls: TlsSettings | None = None
    """HTTPS on the HTTP port; ``None`` serves plain HTTP/1.1 (the default)."""
    frontends: dict[str, FrontendConfig] = field(default_factory=dict)
    """Plugin frontends (``kernel.frontends`` entry points) to serve besides the built-in
    HTTP, gRPC and metrics ones, by name."""
    exit_on_frontend_error: bool = False
    """``--exit-on-frontend-error``: a frontend that fails to start stops the server (by
    default it is logged with its reason and the others serve)."""

    def address(self, endpoint: str) -> str:
        """Where ``endpoint`` (``http``, ``grpc``, ``metrics`` or a plugin's) listens."""
        plugin = self.frontends.get(endpoint)
        if plugin is not None:
            return self.host if plugin.address is None else plugin.address
        own: str | None = getattr(self, f"{endpoint}_address")
        if own is None and endpoint == "metrics":
            own = self.http_address
        return self.host if own is None else own
