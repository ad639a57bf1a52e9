"""``kernel serve``'s command line as a test sees it: the parsed flags and the server settings."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel._frontend_plugins import FrontendPlugin
    from kernel._options import ServerOptions

__all__ = ["serve_command_line"]


def serve_command_line(
    flags: Sequence[str], frontends: Mapping[str, FrontendPlugin] | None = None
) -> tuple[argparse.Namespace, ServerOptions]:
    """What ``kernel serve <flags>`` parses to, without serving.

    Returns the parsed flags (what a frontend plugin's ``create(args)`` receives) and the
    :class:`~kernel.ServerOptions` the server would start with. ``frontends``: the plugin
    frontends whose flags the command takes, by name (``kernel serve`` finds the installed ones
    through their entry points; a test names its own).

    :raises SystemExit: a flag the parser refuses, as ``kernel serve`` exits on it.
    :raises ValueError: flags no server can start with, in ``kernel serve``'s words.
    """
    from kernel._cli import build_parser
    from kernel._serve_command import options_from_args

    args = build_parser(frontends).parse_args(["serve", *flags])
    return args, options_from_args(args, frontends)
