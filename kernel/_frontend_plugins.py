"""Frontends as plugins: the contract, the three built-in ones, and discovery by entry point.

A frontend distribution declares an entry point in the ``kernel.frontends`` group whose name is
the frontend's name and whose object is a :class:`FrontendPlugin` instance (or a class, called
with no arguments). ``kernel serve`` loads every installed plugin to declare its flags, so the
module holding the plugin object must be light: import the server stack in ``create``.

Only the standard library is imported here (``kernel serve --help`` and ``kernel frontends``
stay light); the built-in frontends' modules are imported by their ``create``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kernel._server import Frontend

__all__ = [
    "BUILTIN_FRONTENDS",
    "ENTRY_POINT_GROUP",
    "FrontendInfo",
    "FrontendPlugin",
    "installed_frontends",
    "load_frontend_plugins",
    "plugin_arguments",
]

ENTRY_POINT_GROUP = "kernel.frontends"
KERNEL_DISTRIBUTION = "triton-kernel"

log = logging.getLogger("kernel.frontends")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@runtime_checkable
class FrontendPlugin(Protocol):
    """What a ``kernel.frontends`` entry point provides: a frontend's name, flags and factory.

    The kernel binds the frontend's socket itself from ``--<name>-port`` and
    ``--<name>-address`` (both declared by the kernel, not by the plugin), so readiness,
    ``--<name>-port 0`` (any free port, the bound one in ``server.ports[name]``), port-in-use
    errors and graceful stop work alike for every frontend.
    """

    name: str
    """The frontend's name (the entry point's name): lower case letters, digits, ``_``."""
    default_port: int | None
    """The port it serves on by default; ``None``: off unless ``--<name>-port`` is given."""
    description: str
    """One line for ``kernel frontends``."""

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        """Declare the frontend's own flags, each spelled ``--<name>-...``, on ``group``.

        Called by ``kernel serve`` while it builds its parser (also for ``--help``), and by the
        server for a frontend enabled through :class:`kernel._options.FrontendConfig`.
        """
        ...

    def create(self, args: argparse.Namespace) -> Frontend:
        """The frontend ``kernel serve`` runs (called once, before any model loads).

        ``args`` holds the parsed flags (the plugin's own among them). The returned object's
        ``start(server, sock)`` is called once the startup models settled, on a socket the
        kernel bound and listens on; ``stop(timeout)`` at shutdown.

        :raises Exception: a frontend that cannot be created (bad flags, a missing library):
            logged with its reason, and the other frontends serve (``kernel serve`` exits
            instead with ``--exit-on-frontend-error=true``).
        """
        ...


class _BuiltinFrontend:
    """One of the kernel's own frontends; its flags (``--http-port``, ``--allow-http``, ...)
    are ``kernel serve``'s own, kept as tritonserver spells them."""

    def __init__(self, name: str, default_port: int, description: str, target: str) -> None:
        self.name = name
        self.default_port: int | None = default_port
        self.description = description
        self._target = target

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        """Nothing: the built-in frontends' flags are declared by ``kernel serve`` itself."""

    def create(self, args: argparse.Namespace) -> Frontend:
        module_name, _, class_name = self._target.partition(":")
        factory = getattr(importlib.import_module(module_name), class_name)
        frontend: Frontend = factory()
        return frontend


HTTP = _BuiltinFrontend(
    "http",
    8000,
    "KServe v2 REST with Triton's extensions, generate and generate_stream (HTTP/1.1)",
    "kernel.frontends._http:HttpFrontend",
)
GRPC = _BuiltinFrontend(
    "grpc",
    8001,
    "inference.GRPCInferenceService and grpc.health.v1 (HTTP/2)",
    "kernel.frontends._grpc:GrpcFrontend",
)
METRICS = _BuiltinFrontend(
    "metrics",
    8002,
    "Prometheus metrics, Triton's nv_* families",
    "kernel.frontends._metrics:MetricsFrontend",
)

BUILTIN_FRONTENDS: dict[str, FrontendPlugin] = {"http": HTTP, "grpc": GRPC, "metrics": METRICS}
"""The kernel distribution's own frontends, by name (its entry points point at these)."""


@dataclass(frozen=True, slots=True)
class FrontendInfo:
    """An installed frontend as its entry point declares it."""

    name: str
    value: str
    """The entry point's ``module:object``."""
    distribution: str
    version: str


def _info(ep: EntryPoint) -> FrontendInfo:
    dist = ep.dist
    return FrontendInfo(
        name=ep.name,
        value=ep.value,
        distribution=dist.name if dist is not None else "?",
        version=dist.version if dist is not None else "?",
    )


def _entry_points() -> dict[str, tuple[EntryPoint | None, FrontendInfo]]:
    found: dict[str, tuple[EntryPoint | None, FrontendInfo]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        info = _info(ep)
        if ep.name in BUILTIN_FRONTENDS and info.distribution != KERNEL_DISTRIBUTION:
            log.error(
                "ignoring frontend '%s' of '%s': the name is one of the kernel's own",
                ep.name,
                info.distribution,
            )
            continue
        other = found.get(ep.name)
        if other is not None and other[1].distribution != info.distribution:
            log.error(
                "frontend '%s' is installed twice: by '%s' (%s) and by '%s' (%s); using the first",
                ep.name,
                other[1].distribution,
                other[1].value,
                info.distribution,
                info.value,
            )
            continue
        found[ep.name] = (ep, info)
    for name, plugin in BUILTIN_FRONTENDS.items():
        # An editable install made before the entry points existed has stale metadata: the
        # kernel's own frontends are served all the same.
        if name not in found:
            value = f"{__name__}:{plugin.name.upper()}"
            found[name] = (None, FrontendInfo(name, value, KERNEL_DISTRIBUTION, "?"))
    return found


def installed_frontends() -> dict[str, FrontendInfo]:
    """Every frontend installed in this environment, by name, without importing any."""
    return {name: info for name, (_, info) in sorted(_entry_points().items())}


def _check(plugin: object, name: str) -> FrontendPlugin:
    """``plugin`` if it honours the contract, else a ``TypeError`` naming what is wrong."""
    if isinstance(plugin, type):
        plugin = plugin()
    problems = []
    if getattr(plugin, "name", None) != name:
        problems.append(f"its name {getattr(plugin, 'name', None)!r} is not the entry point's")
    port = getattr(plugin, "default_port", "missing")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)):
        problems.append("default_port is not an int or None")
    if not isinstance(getattr(plugin, "description", None), str):
        problems.append("description is not a str")
    for method in ("add_arguments", "create"):
        if not callable(getattr(plugin, method, None)):
            problems.append(f"it has no {method}()")
    if problems:
        raise TypeError(f"not a kernel FrontendPlugin: {'; '.join(problems)}")
    assert isinstance(plugin, FrontendPlugin)
    return plugin


def load_frontend_plugins(
    names: set[str] | None = None,
) -> tuple[dict[str, FrontendPlugin], dict[str, str]]:
    """Import the installed frontend plugins (those in ``names``, or all).

    Each plugin's failure is its own: returns the plugins loaded and, by name, why the others
    failed (an import error, a name that breaks the contract, ...).
    """
    loaded: dict[str, FrontendPlugin] = {}
    failed: dict[str, str] = {}
    for name, (ep, info) in sorted(_entry_points().items()):
        if names is not None and name not in names:
            continue
        if not _NAME.match(name):
            failed[name] = f"'{name}' is not a valid frontend name (a-z, 0-9, _)"
            continue
        try:
            obj = BUILTIN_FRONTENDS[name] if ep is None else ep.load()
            loaded[name] = _check(obj, name)
        except Exception as exc:
            failed[name] = f"{info.distribution} ({info.value}): {type(exc).__name__}: {exc}"
    return loaded, failed


def plugin_arguments(
    parser: argparse.ArgumentParser, plugin: FrontendPlugin
) -> argparse._ArgumentGroup:
    """Declare a plugin frontend's flags on ``parser``: ``--<name>-port`` and
    ``--<name>-address`` (the kernel's), then the plugin's own."""
    name = plugin.name
    flag = name.replace("_", "-")
    group = parser.add_argument_group(f"{name} frontend: {plugin.description}")
    default = plugin.default_port
    group.add_argument(
        f"--{flag}-port",
        dest=f"{name}_port",
        type=int,
        default=default,
        metavar="PORT",
        help=f"serve the {name} frontend on PORT (0: any free port)"
        + (f"; default {default}" if default is not None else "; default: off"),
    )
    group.add_argument(
        f"--{flag}-address",
        dest=f"{name}_address",
        default=None,
        metavar="HOST",
        help="default: --host",
    )
    group.add_argument(
        f"--allow-{flag}",
        dest=f"allow_{name}",
        type=_bool,
        default=True,
        metavar="BOOL",
        help=f"false turns the {name} frontend off",
    )
    plugin.add_arguments(group)
    return group


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
