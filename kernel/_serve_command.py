"""What ``kernel serve`` does: its flags as :class:`ServerOptions`, then the server until a signal.

Kept apart from the parser (:mod:`kernel._cli`) so ``kernel --help`` stays light.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from kernel._backends_command import format_table
from kernel._errors import KernelError
from kernel._ignored_flags import report_ignored_flags
from kernel._log_output import configure_logging
from kernel._malloc import tune_malloc
from kernel._manager import ModelIndexEntry
from kernel._options import (
    FrontendConfig,
    ModelControlMode,
    ServerOptions,
    TlsSettings,
    example_repository,
)
from kernel._server import InferenceServer
from kernel._trace_settings import check_trace_update

if TYPE_CHECKING:
    from kernel._frontend_plugins import FrontendPlugin

__all__ = [
    "check_tls",
    "model_table",
    "options_from_args",
    "serve",
    "trace_opentelemetry",
    "trace_settings",
]

log = logging.getLogger("kernel.serve")


def trace_settings(
    triples: Sequence[tuple[str, str, str]],
) -> tuple[dict[str, list[str]], Path | None]:
    """``--trace-config`` flags as the trace settings API's global settings, and the file.

    :raises ValueError: a value the setting cannot take, in the settings API's words.
    """
    names = {"rate": "trace_rate", "count": "trace_count", "log-frequency": "log_frequency"}
    changes: dict[str, list[str] | None] = {}
    levels: list[str] = []
    file: Path | None = None
    trace_mode = "triton"
    for mode, key, value in triples:
        if mode == "opentelemetry":
            continue
        if key == "level":
            levels.append(value.upper())
        elif key == "file":
            file = Path(value) if value else None
        elif key == "mode":
            trace_mode = value
        elif key in names:
            changes[names[key]] = [value]
    if levels:
        changes["trace_level"] = levels
    try:
        settings = {k: v for k, v in check_trace_update(changes).items() if v}
    except KernelError as exc:
        raise ValueError(f"--trace-config: {exc.message}") from None
    if trace_mode != "triton":
        settings["trace_mode"] = [trace_mode]
    if file is not None:
        if not file.parent.is_dir():
            raise ValueError(f"--trace-config triton,file={file}: no such directory")
        settings["trace_file"] = [str(file)]
    return settings, file


def trace_opentelemetry(triples: Sequence[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """The ``--trace-config opentelemetry,<key>=<value>`` flags, in order."""
    return [(key, value) for mode, key, value in triples if mode == "opentelemetry"]


def _tls_from_args(args: argparse.Namespace, endpoint: str) -> TlsSettings | None:
    """``--<endpoint>-use-ssl*`` as settings: TLS when ``--<endpoint>-use-ssl`` ends up true
    (``--<endpoint>-use-ssl-mutual`` sets it, see :mod:`kernel._cli`); the other flags are
    ignored otherwise, as tritonserver ignores them (with a warning here)."""
    use_ssl = getattr(args, f"{endpoint}_use_ssl")
    mutual = getattr(args, f"{endpoint}_use_ssl_mutual")
    files = {
        name: getattr(args, f"{endpoint}_{name}")
        for name in ("server_cert", "server_key", "root_cert")
    }
    if not use_ssl:
        given = {**files, "use_ssl_mutual": mutual}
        ignored = [f"--{endpoint}-{name.replace('_', '-')}" for name, v in given.items() if v]
        if ignored:
            log.warning("ignoring %s: --%s-use-ssl is false", ", ".join(ignored), endpoint)
        return None
    return TlsSettings(
        cert=files["server_cert"],
        key=files["server_key"],
        root_cert=files["root_cert"],
        mutual=mutual,
    )


def _plugin_frontends(
    args: argparse.Namespace, plugins: Mapping[str, FrontendPlugin]
) -> dict[str, FrontendConfig]:
    """The plugin frontends ``kernel serve``'s flags enable: those with a port (their
    ``default_port`` or ``--<name>-port``) and not ``--allow-<name>=false``."""
    enabled: dict[str, FrontendConfig] = {}
    for name, plugin in plugins.items():
        port = getattr(args, f"{name}_port", None)
        if port is None or not getattr(args, f"allow_{name}", True):
            continue
        enabled[name] = FrontendConfig(
            port=port, address=getattr(args, f"{name}_address", None), args=args, plugin=plugin
        )
    return enabled


def options_from_args(
    args: argparse.Namespace, plugins: Mapping[str, FrontendPlugin] | None = None
) -> ServerOptions:
    """The :class:`ServerOptions` of ``kernel serve``'s parsed flags (``plugins``: the plugin
    frontends whose flags the parser declared).

    :raises ValueError: flags no server can start with (a restricted API in two groups, a bad
        header-forward pattern, ``--model-namespacing=true``, ...).
    """
    from kernel.frontends._access import HeaderForwarding, merge_restrictions

    if args.model_namespacing:
        raise ValueError(
            "--model-namespacing=true is not supported: model names must be unique across"
            " the repositories here"
        )
    if any(c.isspace() for c in args.model_config_name):
        raise ValueError("--model-config-name must not contain a space character")
    if args.model_load_retry_count < 0:
        raise ValueError("--model-load-retry-count must be 0 or more")
    for endpoint in ("http", "grpc"):
        flag = f"--{endpoint}-header-forward-pattern"
        HeaderForwarding.compile(getattr(args, f"{endpoint}_header_forward_pattern"), flag)
    backend_config: dict[str, dict[str, str]] = {}
    for name, key, value in args.backend_config:
        backend_config.setdefault(name, {})[key] = value
    cache_config: dict[str, dict[str, str]] = {}
    if args.response_cache_byte_size is not None:
        cache_config["local"] = {"size": str(args.response_cache_byte_size)}
    for name, key, value in args.cache_config:
        cache_config.setdefault(name, {})[key] = value
    traces, trace_file = trace_settings(args.trace_config)
    return ServerOptions(
        model_repositories=[Path(p) for p in args.model_repository] or [example_repository()],
        model_control_mode=ModelControlMode(args.model_control_mode),
        load_models=list(args.load_model),
        repository_poll_secs=args.repository_poll_secs,
        host=args.host,
        http_address=args.http_address,
        grpc_address=args.grpc_address,
        metrics_address=args.metrics_address,
        reuse_http_port=args.reuse_http_port,
        reuse_grpc_port=args.reuse_grpc_port,
        allow_client_shm=args.allow_client_shm,
        http_restricted_api=merge_restrictions(args.http_restricted_api, "--http-restricted-api"),
        grpc_restricted_protocol=merge_restrictions(
            args.grpc_restricted_protocol, "--grpc-restricted-protocol"
        ),
        http_header_forward_pattern=args.http_header_forward_pattern,
        grpc_header_forward_pattern=args.grpc_header_forward_pattern,
        model_config_name=args.model_config_name,
        model_load_retry_count=args.model_load_retry_count,
        metrics_interval_ms=args.metrics_interval_ms,
        allow_gpu_metrics=args.allow_gpu_metrics,
        http_port=args.http_port if args.allow_http else None,
        grpc_port=args.grpc_port if args.allow_grpc else None,
        metrics_port=args.metrics_port if args.allow_metrics else None,
        strict_readiness=args.strict_readiness,
        exit_timeout_secs=args.exit_timeout_secs,
        exit_on_error=(
            bool(args.model_repository) if args.exit_on_error is None else args.exit_on_error
        ),
        backend_directory=args.backend_directory,
        server_name=args.server_name,
        auto_complete_config=not (args.disable_auto_complete_config or args.strict_model_config),
        backend_config=backend_config,
        cache_config=cache_config,
        rate_limit=args.rate_limit,
        rate_limit_resources={(n, d): c for n, c, d in args.rate_limit_resource},
        http_max_input_bytes=args.http_max_input_size,
        http_max_url_bytes=args.http_max_url_size,
        http_max_header_bytes=args.http_max_header_size,
        http_max_header_count=args.http_max_header_count,
        http_header_timeout_secs=args.http_header_timeout_secs,
        http_idle_timeout_secs=args.http_idle_timeout_secs,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
        grpc_max_concurrent_streams=args.grpc_max_concurrent_streams,
        grpc_max_header_list_size=args.grpc_max_header_list_size,
        grpc_keepalive_time_ms=args.grpc_keepalive_time,
        grpc_keepalive_timeout_ms=args.grpc_keepalive_timeout,
        grpc_keepalive_permit_without_calls=args.grpc_keepalive_permit_without_calls,
        grpc_http2_max_pings_without_data=args.grpc_http2_max_pings_without_data,
        grpc_http2_min_recv_ping_interval_without_data_ms=(
            args.grpc_http2_min_recv_ping_interval_without_data
        ),
        grpc_http2_max_ping_strikes=args.grpc_http2_max_ping_strikes,
        log_verbose=args.log_verbose,
        log_info=args.log_info,
        log_warning=args.log_warning,
        log_error=args.log_error,
        log_format=args.log_format,
        log_file=args.log_file,
        metrics_config=dict(args.metrics_config),
        trace_settings=traces,
        trace_file=trace_file,
        trace_mode=traces.get("trace_mode", ["triton"])[0],
        trace_opentelemetry=trace_opentelemetry(args.trace_config),
        grpc_tls=_tls_from_args(args, "grpc"),
        http_tls=_tls_from_args(args, "http"),
        frontends=_plugin_frontends(args, plugins or {}),
        exit_on_frontend_error=args.exit_on_frontend_error,
    )


def model_table(index: list[ModelIndexEntry]) -> str:
    rows = [
        (row.name, row.version or "-", row.state or "UNLOADED")
        if not row.reason
        else (row.name, row.version or "-", f"{row.state}: {row.reason}")
        for row in index
    ]
    return format_table(("Model", "Version", "Status"), rows)


def check_tls(options: ServerOptions) -> None:
    """Load the TLS files now, so a bad one stops ``kernel serve`` before any model loads.

    :raises KernelError: ``INVALID_ARG`` naming the flag and file at fault.
    """
    from kernel.frontends._tls import server_context

    if options.grpc_port is not None:
        server_context(options.grpc_tls, "grpc")
    if options.http_port is not None:
        server_context(options.http_tls, "http")


def serve(
    args: argparse.Namespace,
    plugins: Mapping[str, FrontendPlugin] | None = None,
    failed_plugins: Mapping[str, str] | None = None,
) -> int:
    """Run ``kernel serve`` until SIGINT/SIGTERM; returns the exit status.

    ``plugins`` are the plugin frontends loaded for the parser, ``failed_plugins`` why others
    failed to load (logged; with ``--exit-on-frontend-error`` the command exits).
    """
    try:
        options = options_from_args(args, plugins)
    except ValueError as exc:
        sys.exit(f"kernel serve: {exc}")
    try:
        configure_logging(
            {
                "log_info": options.log_info,
                "log_warning": options.log_warning,
                "log_error": options.log_error,
                "log_verbose_level": options.log_verbose,
                "log_format": options.log_format,
            },
            options.log_file,
        )
    except OSError as exc:
        sys.exit(f"kernel serve: cannot open --log-file {options.log_file}: {exc.strerror}")
    report_ignored_flags(args)
    tune_malloc()  # before any model process starts: they inherit the thresholds
    for name, reason in (failed_plugins or {}).items():
        log.error("the %s frontend is not served: %s", name, reason)
        if options.exit_on_frontend_error:
            log.error("exiting: a frontend failed (--exit-on-frontend-error=true)")
            return 1
    try:
        check_tls(options)
        server = InferenceServer(options)
    except KernelError as exc:
        log.error("%s", exc.message)
        return 1
    except ValueError as exc:  # a setting no server can start with (e.g. --cache-config)
        sys.exit(f"kernel serve: {exc}")
    status = 0

    async def main() -> None:
        nonlocal status
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                try:
                    await tg.start(server.serve)
                except KernelError as exc:
                    if server.manager.index():  # a model failed (--exit-on-error): say which
                        sys.stderr.write(model_table(server.repository_index()) + "\n")
                    log.error("%s", exc.message)
                    status = 1
                    return
                sys.stderr.write(model_table(server.repository_index()) + "\n")
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    server.stop()
                    break

    try:
        anyio.run(main, backend_options={"use_uvloop": True})
    except ImportError:  # uvloop is optional
        anyio.run(main)
    return status
