"""What the ``kernel`` subcommands do (kept apart from the parser so ``--help`` stays light)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from kernel.cli import configure_logging
from kernel.errors import KernelError
from kernel.manager import ModelControlMode, ModelIndexEntry
from kernel.options import ServerOptions, example_repository
from kernel.registry import BackendRegistry
from kernel.repository import ModelRepository, backend_name, normalize_config, select_versions
from kernel.server import InferenceServer

log = logging.getLogger("kernel.serve")


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """The :class:`ServerOptions` of ``kernel serve``'s parsed flags."""
    backend_config: dict[str, dict[str, str]] = {}
    for name, key, value in args.backend_config:
        backend_config.setdefault(name, {})[key] = value
    return ServerOptions(
        model_repositories=[Path(p) for p in args.model_repository] or [example_repository()],
        model_control_mode=ModelControlMode(args.model_control_mode),
        load_models=list(args.load_model),
        repository_poll_secs=args.repository_poll_secs,
        host=args.host,
        http_port=args.http_port if args.allow_http else None,
        grpc_port=args.grpc_port if args.allow_grpc else None,
        metrics_port=args.metrics_port if args.allow_metrics else None,
        strict_readiness=args.strict_readiness,
        exit_timeout_secs=args.exit_timeout_secs,
        server_name=args.server_name,
        auto_complete_config=not (args.disable_auto_complete_config or args.strict_model_config),
        backend_config=backend_config,
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
    )


def format_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A tritonserver-style ``+---+`` table."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: tuple[str, ...]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def model_table(index: list[ModelIndexEntry]) -> str:
    rows = [
        (row.name, row.version or "-", row.state or "UNLOADED")
        if not row.reason
        else (row.name, row.version or "-", f"{row.state}: {row.reason}")
        for row in index
    ]
    return format_table(("Model", "Version", "Status"), rows)


def serve(args: argparse.Namespace) -> int:
    """Run ``kernel serve`` until SIGINT/SIGTERM; returns the exit status."""
    configure_logging(args.log_verbose, args.log_info)
    options = options_from_args(args)
    server = InferenceServer(options)
    status = 0

    async def main() -> None:
        nonlocal status
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                try:
                    await tg.start(server.serve)
                except KernelError as exc:
                    log.error("%s", exc.message)
                    status = 1
                    return
                sys.stderr.write(model_table(server.repository_index()) + "\n")
                if args.exit_on_error and not server.manager.all_ready():
                    log.error("exiting: some models failed to load (--exit-on-error=true)")
                    status = 1
                    server.stop()
                    return
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    server.stop()
                    break

    try:
        anyio.run(main, backend_options={"use_uvloop": True})
    except ImportError:  # uvloop is optional
        anyio.run(main)
    return status


def list_backends() -> int:
    """``kernel backends``: the installed backends with distribution, version and attributes."""
    rows: list[tuple[str, ...]] = []
    for name, info in sorted(BackendRegistry.installed().items()):
        try:
            from importlib.metadata import EntryPoint

            cls = EntryPoint(name=name, value=info.value, group="").load()
            attributes = getattr(cls, "attributes", None)
            described = (
                f"parallel_instance_loading={attributes.parallel_instance_loading}"
                if attributes is not None
                else "not a kernel.Backend"
            )
        except Exception as exc:
            described = f"fails to import: {type(exc).__name__}: {exc}"
        rows.append((name, info.distribution, info.version, described))
    if not rows:
        print("no backends installed (pip install triton-backend-onnx, for one)")
        return 0
    print(format_table(("Backend", "Distribution", "Version", "Attributes"), rows))
    return 0


def check(repositories: list[Path]) -> int:
    """``kernel check``: parse and validate every model; print each problem; 1 if any."""
    problems: list[str] = []
    repository = ModelRepository(repositories)
    try:
        found, duplicates = repository.scan()
    except KernelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    problems.extend(f"{name}: {reason}" for name, reason in duplicates.items())
    installed = BackendRegistry.installed()
    checked = 0
    for name in sorted(found):
        if name in duplicates:
            continue
        checked += 1
        try:
            source = repository.read(name)
            normalize_config(source.config, source.config_path, gpus=0)
            backend = backend_name(source.config, source.config_path)
            if backend != "ensemble" and backend not in installed:
                problems.append(
                    f"{name}: {BackendRegistry.missing_backend_message(backend, installed)}"
                )
            select_versions(source)
        except KernelError as exc:
            problems.append(f"{name}: {exc.message}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"checked {checked} models: {len(problems)} problem(s)")
    return 1 if problems else 0
