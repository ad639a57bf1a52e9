"""The ``kernel`` command: ``serve``, ``backends``, ``frontends`` and ``check``.

``kernel serve`` takes tritonserver's flags where the meaning is the same; a tritonserver flag it
does not implement is refused by name rather than silently ignored. Heavy imports happen inside
the command that needs them, so ``kernel --help`` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from kernel._ignored_flags import NO_OP_FLAGS

if TYPE_CHECKING:
    from kernel._frontend_plugins import FrontendPlugin

__all__ = ["build_parser", "main", "tritonserver"]

# tritonserver flags that have no meaning here, with the reason given to the user.
_UNSUPPORTED = {
    "--repoagent-directory": "repository agents are not supported",
    "--min-supported-compute-capability": "GPU selection is done by the backends",
    "--trace-file": "use --trace-config triton,file=PATH (tritonserver's current flag)",
    "--trace-level": "use --trace-config level=TIMESTAMPS|TENSORS",
    "--trace-rate": "use --trace-config rate=N",
    "--trace-count": "use --trace-config count=N",
    "--trace-log-frequency": "use --trace-config triton,log-frequency=N",
    "--host-policy": "host policies are not supported",
    "--allow-sagemaker": "the SageMaker endpoint is not implemented",
    "--allow-vertex-ai": "the Vertex AI endpoint is not implemented",
    "--grpc-max-connection-age": "gRPC connection ageing is not implemented",
    "--grpc-max-connection-age-grace": "gRPC connection ageing is not implemented",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


class _MutualTls(argparse.Action):
    """``--grpc-use-ssl-mutual``: tritonserver sets ``--grpc-use-ssl`` to true whenever this flag
    is given, even as ``=false`` (TLS without client certificates then); flags apply in order,
    so a ``--grpc-use-ssl=false`` after it still wins. Doing the same keeps a tritonserver
    command line from silently serving cleartext here."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest.removesuffix("_mutual"), True)


def _backend_config(text: str) -> tuple[str, str, str]:
    name, _, setting = text.partition(",")
    key, sep, value = setting.partition("=")
    if not sep:
        # tritonserver also allows a global "<setting>=<value>" without a backend name
        key, sep, value = text.partition("=")
        name = ""
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected <backend>,<setting>=<value>, got '{text}'")
    return name, key, value


def _restriction(text: str) -> tuple[tuple[str, ...], str, str]:
    from kernel.frontends._access import parse_restriction

    try:
        return parse_restriction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected <key>=<value>, got '{text}'")
    return key, value


_TRACE_KEYS = {
    "": ("rate", "level", "count", "mode", "file", "log-frequency"),
    "triton": ("rate", "level", "count", "mode", "file", "log-frequency"),
    "opentelemetry": (
        "url",
        "resource",
        "bsp_max_queue_size",
        "bsp_schedule_delay",
        "bsp_max_export_batch_size",
    ),
}


def _trace_config(text: str) -> tuple[str, str, str]:
    """``[<mode>,]<setting>=<value>`` as ``(mode, setting, value)``.

    See :func:`kernel._serve_command.trace_settings`.
    """
    mode, sep, setting = text.partition(",")
    if not sep or "=" in mode:
        mode, setting = "", text
    key, sep, value = setting.partition("=")
    if mode not in _TRACE_KEYS or not sep or not key:
        raise argparse.ArgumentTypeError(
            f"expected [triton|opentelemetry,]<setting>=<value>, got '{text}'"
        )
    if key not in _TRACE_KEYS[mode]:
        raise argparse.ArgumentTypeError(f"unknown trace setting '{key}' in '{text}'")
    if key == "mode" and value not in ("triton", "opentelemetry"):
        raise argparse.ArgumentTypeError(
            f"unknown trace mode '{value}' in '{text}' (triton or opentelemetry)"
        )
    if key == "resource" and "=" not in value.strip("="):
        raise argparse.ArgumentTypeError(f"expected resource=<key>=<value>, got '{text}'")
    if key.startswith("bsp_") and not value.isdigit():
        raise argparse.ArgumentTypeError(f"'{key}' takes a non-negative integer, got '{text}'")
    return mode, key, value


def _rate_limit_resource(text: str) -> tuple[str, int, int | str]:
    from kernel._scheduling._rate_limiter import parse_rate_limit_resource

    try:
        return parse_rate_limit_resource(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(frontends: Mapping[str, FrontendPlugin] | None = None) -> _Parser:
    """The parser; ``frontends``: the plugin frontends whose flags ``kernel serve`` takes."""
    parser = _Parser(prog="kernel", description="A Triton-compatible inference server.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve model repositories over gRPC and HTTP")
    serve.add_argument(
        "--model-repository",
        "--model-store",
        action="append",
        default=[],
        metavar="PATH",
        help="a model repository folder (repeatable); default: the bundled examples",
    )
    serve.add_argument("--model-control-mode", choices=["none", "poll", "explicit"], default="none")
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with explicit control: a model to load at start ('*' for all)",
    )
    serve.add_argument("--repository-poll-secs", type=float, default=15.0)
    serve.add_argument(
        "--host",
        default="0.0.0.0",
        help="address of every endpoint without its own --*-address (default: all interfaces,"
        " as tritonserver; --host 127.0.0.1 keeps the server on loopback)",
    )
    serve.add_argument("--http-address", default=None, help="default: --host")
    serve.add_argument("--grpc-address", default=None, help="default: --host")
    serve.add_argument("--metrics-address", default=None, help="default: --http-address")
    serve.add_argument("--reuse-http-port", type=_bool, default=False, metavar="BOOL")
    serve.add_argument("--reuse-grpc-port", type=_bool, default=False, metavar="BOOL")
    serve.add_argument(
        "--allow-client-shm",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="false refuses the shared-memory APIs (default: true)",
    )
    for flag, what in (("--http-restricted-api", "API"), ("--grpc-restricted-protocol", "rpc")):
        serve.add_argument(
            flag,
            type=_restriction,
            action="append",
            default=[],
            metavar="GROUP[,GROUP...]:KEY=VALUE",
            help=f"{what} groups that need header KEY with VALUE (repeatable)",
        )
    for endpoint in ("http", "grpc"):
        serve.add_argument(
            f"--{endpoint}-header-forward-pattern",
            default="",
            metavar="REGEX",
            help="headers whose name matches become string request parameters",
        )
    serve.add_argument(
        "--model-config-name",
        default="",
        metavar="NAME",
        help="load <model>/configs/NAME.pbtxt where it exists instead of config.pbtxt",
    )
    serve.add_argument("--model-load-retry-count", type=int, default=0, metavar="N")
    serve.add_argument(
        "--model-namespacing",
        type=_bool,
        default=False,
        metavar="BOOL",
        help="true is refused: model names are unique across repositories here",
    )
    serve.add_argument(
        "--metrics-interval-ms",
        type=float,
        default=2000.0,
        metavar="MS",
        help="accepted for tritonserver command lines: metrics are computed when scraped",
    )
    serve.add_argument(
        "--grpc-infer-response-compression-level",
        choices=["none", "low", "medium", "high"],
        default="none",
        help="accepted; gRPC responses are sent uncompressed (a warning says so)",
    )
    no_ops = serve.add_argument_group("accepted and ignored (tuning this server does not have)")
    for flag in NO_OP_FLAGS:
        no_ops.add_argument(flag, default=None, metavar="VALUE")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--allow-http", type=_bool, default=True)
    serve.add_argument("--allow-grpc", type=_bool, default=True)
    serve.add_argument("--allow-metrics", type=_bool, default=True)
    serve.add_argument(
        "--allow-gpu-metrics",
        type=_bool,
        default=True,
        help="Triton's GPU families through NVML when a GPU is present (false: never look)",
    )
    serve.add_argument(
        "--metrics-config",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="summary_latencies=true, histogram_latencies=true, summary_quantiles=Q:E,...",
    )
    serve.add_argument(
        "--exit-on-frontend-error",
        type=_bool,
        default=False,
        metavar="BOOL",
        help="exit when a frontend fails to start (default: log why; the others serve)",
    )
    serve.add_argument("--strict-readiness", type=_bool, default=True)
    serve.add_argument("--exit-timeout-secs", type=float, default=30.0)
    serve.add_argument(
        "--exit-on-error",
        type=_bool,
        default=None,
        help="exit when a model fails to load at start, as tritonserver (default true; false"
        " when serving the bundled examples, whose backends may not all be installed)",
    )
    serve.add_argument(
        "--backend-directory",
        type=Path,
        default=None,
        metavar="DIR",
        help="Python-based backends as DIR/<backend>/model.py (installed backends first)",
    )
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.add_argument("--log-info", type=_bool, default=True)
    serve.add_argument("--log-warning", type=_bool, default=True)
    serve.add_argument("--log-error", type=_bool, default=True)
    serve.add_argument(
        "--log-format",
        choices=["default", "ISO8601", "json"],
        default="default",
        help="json: one object a line (time, level, logger, model, message, request_id)",
    )
    serve.add_argument(
        "--log-file", type=Path, default=None, help="append log lines to this file, not stderr"
    )
    serve.add_argument(
        "--backend-config",
        type=_backend_config,
        action="append",
        default=[],
        metavar="BACKEND,KEY=VALUE",
    )
    serve.add_argument(
        "--rate-limit",
        choices=["off", "execution_count"],
        default="off",
        help="execution_count: instances execute only while holding their rate_limiter resources",
    )
    serve.add_argument(
        "--rate-limit-resource",
        type=_rate_limit_resource,
        action="append",
        default=[],
        metavar="NAME:COUNT[:DEVICE]",
    )
    serve.add_argument(
        "--trace-config",
        type=_trace_config,
        action="append",
        default=[],
        metavar="[MODE,]SETTING=VALUE",
        help="tritonserver's: mode=triton|opentelemetry, level=TIMESTAMPS|TENSORS, rate=N,"
        " count=N, triton,file=PATH, triton,log-frequency=N, opentelemetry,url=URL,"
        " opentelemetry,resource=KEY=VALUE, opentelemetry,bsp_max_queue_size=N,"
        " opentelemetry,bsp_schedule_delay=MS, opentelemetry,bsp_max_export_batch_size=N",
    )
    serve.add_argument(
        "--cache-config",
        type=_backend_config,
        action="append",
        default=[],
        metavar="CACHE,KEY=VALUE",
        help="the response cache: local,size=<bytes> (an in-process LRU)",
    )
    serve.add_argument(
        "--response-cache-byte-size",
        type=int,
        default=None,
        help="tritonserver's older spelling of --cache-config local,size=<bytes>",
    )
    serve.add_argument("--disable-auto-complete-config", action="store_true")
    serve.add_argument(
        "--strict-model-config",
        type=_bool,
        default=False,
        help="true disables auto-complete (tritonserver's older flag)",
    )
    serve.add_argument(
        "--server-name",
        "--id",
        dest="server_name",
        default="triton",
        help="the name server metadata reports (clients check for 'triton')",
    )
    serve.add_argument("--http-max-input-size", type=int, default=64 * 1024 * 1024)
    # this server's own HTTP/1.1 limits (tritonserver has no such flags)
    serve.add_argument("--http-max-url-size", type=int, default=8 * 1024, metavar="BYTES")
    serve.add_argument("--http-max-header-size", type=int, default=64 * 1024, metavar="BYTES")
    serve.add_argument("--http-max-header-count", type=int, default=100)
    serve.add_argument("--http-header-timeout-secs", type=float, default=30.0)
    serve.add_argument("--http-idle-timeout-secs", type=float, default=75.0)
    serve.add_argument(
        "--grpc-max-message-size", type=int, default=2**31 - 1, dest="grpc_max_message_bytes"
    )
    grpc = serve.add_argument_group("gRPC HTTP/2 limits and keepalive (tritonserver's meaning)")
    grpc.add_argument("--grpc-max-concurrent-streams", type=int, default=100)
    grpc.add_argument("--grpc-max-header-list-size", type=int, default=16 * 1024)
    grpc.add_argument("--grpc-keepalive-time", type=int, default=7_200_000, metavar="MS")
    grpc.add_argument("--grpc-keepalive-timeout", type=int, default=20_000, metavar="MS")
    grpc.add_argument("--grpc-keepalive-permit-without-calls", type=_bool, default=False)
    grpc.add_argument("--grpc-http2-max-pings-without-data", type=int, default=2)
    grpc.add_argument(
        "--grpc-http2-min-recv-ping-interval-without-data", type=int, default=300_000, metavar="MS"
    )
    grpc.add_argument("--grpc-http2-max-ping-strikes", type=int, default=2)

    for endpoint, origin in (("grpc", "tritonserver's flags"), ("http", "this server's own")):
        tls = serve.add_argument_group(f"{endpoint.upper()} TLS ({origin})")
        tls.add_argument(
            f"--{endpoint}-use-ssl",
            type=_bool,
            default=False,
            metavar="BOOL",
            help="serve TLS on this port with the server cert and key (default: false)",
        )
        tls.add_argument(
            f"--{endpoint}-use-ssl-mutual",
            type=_bool,
            default=False,
            metavar="BOOL",
            action=_MutualTls,
            help="require a client certificate signed by the root cert; turns TLS on whatever"
            " its value, as in tritonserver (a later --*-use-ssl=false turns it off)",
        )
        tls.add_argument(f"--{endpoint}-server-cert", type=Path, metavar="PEM")
        tls.add_argument(f"--{endpoint}-server-key", type=Path, metavar="PEM")
        tls.add_argument(
            f"--{endpoint}-root-cert",
            type=Path,
            metavar="PEM",
            help="the authority that signs client certificates (with mutual TLS)",
        )

    if frontends:
        from kernel._frontend_plugins import plugin_arguments

        for plugin in frontends.values():
            plugin_arguments(serve, plugin)

    commands.add_parser("frontends", help="list the installed frontends")

    backends = commands.add_parser("backends", help="list the installed backends")
    backends.add_argument(
        "--import",
        dest="load",
        action="store_true",
        help="import each backend (and its framework) to check it and show its attributes",
    )
    backends.add_argument(
        "--backend-directory",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also list the Python-based backends DIR/<backend>/model.py",
    )
    backends.add_argument(
        "--model-repository",
        type=Path,
        action="append",
        default=[],
        metavar="REPO",
        help="also list the models whose runtime is a Python file of their own folders",
    )

    check = commands.add_parser("check", help="validate model repositories without serving")
    check.add_argument("repositories", nargs="+", type=Path, metavar="REPO")
    check.add_argument(
        "--backend-directory",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="where Python-based backends DIR/<backend>/model.py are (as kernel serve's)",
    )
    return parser


def _refuse_unknown(args: Sequence[str]) -> None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _UNSUPPORTED:
            sys.exit(
                f"kernel serve: tritonserver flag {flag} is not supported: {_UNSUPPORTED[flag]}"
            )
    if args:
        sys.exit(
            f"kernel serve: unknown flag(s) {' '.join(args)}: kernel serve takes tritonserver's"
            " flags where the meaning is the same (see kernel serve --help)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``kernel`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    plugins: dict[str, FrontendPlugin] = {}
    failed: dict[str, str] = {}
    if words[:1] == ["serve"]:
        from kernel._frontend_plugins import BUILTIN_FRONTENDS, load_frontend_plugins

        plugins, failed = load_frontend_plugins()
        plugins = {n: p for n, p in plugins.items() if n not in BUILTIN_FRONTENDS}
    parser = build_parser(plugins)
    args, unknown = parser.parse_known_args(words)
    if args.command == "serve":
        _refuse_unknown(unknown)
        from kernel._serve_command import serve

        sys.exit(serve(args, plugins, failed))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "backends":
        from kernel._backends_command import list_backends

        sys.exit(
            list_backends(
                load=args.load,
                backend_directories=args.backend_directory,
                repositories=args.model_repository,
            )
        )
    if args.command == "frontends":
        from kernel._backends_command import list_frontends

        sys.exit(list_frontends())
    if args.command == "check":
        from kernel._check_command import check

        sys.exit(check(args.repositories, args.backend_directory))


def tritonserver(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``tritonserver`` console script: ``kernel serve`` as tritonserver runs.

    For deployments that call ``tritonserver`` with its flags (KServe's stock Triton runtime).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    main(["serve", *args])
