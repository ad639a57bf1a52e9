"""An example triton-kernel frontend plugin: a text model's tokens streamed as plain text.

``POST /{model}`` with a text body runs the model (a decoupled one streams) and answers each
response's text output as it comes, as a chunked ``text/plain`` body; ``GET /health`` answers
the server's readiness. ``kernel serve --plaintext-port 8100`` turns it on.

This module is what the ``kernel.frontends`` entry point loads, also for ``kernel serve --help``:
it stays light, and the server stack is imported by :meth:`PlainTextPlugin.create`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel.frontends import Frontend

__all__ = ["PLUGIN", "PlainTextPlugin"]


class PlainTextPlugin:
    """The plugin object: the frontend's name, default port, flags and factory."""

    name = "plaintext"
    default_port: int | None = None  # off unless --plaintext-port is given
    description = "a text model's tokens streamed as plain text (example plugin)"

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        # --plaintext-port, --plaintext-address and --allow-plaintext are the kernel's
        group.add_argument(
            "--plaintext-input",
            default="text_input",
            metavar="NAME",
            help="the model input the request body goes to (default: text_input)",
        )
        group.add_argument(
            "--plaintext-output",
            default="text_output",
            metavar="NAME",
            help="the model output streamed back (default: text_output)",
        )

    def create(self, args: argparse.Namespace) -> Frontend:
        from triton_frontend_plaintext._frontend import PlainTextFrontend

        return PlainTextFrontend(args.plaintext_input, args.plaintext_output)


PLUGIN = PlainTextPlugin()
