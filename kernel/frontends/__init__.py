"""Protocol endpoints (HTTP/REST, gRPC, metrics) that translate wire formats to the server API,
and the public surface a third-party frontend plugin is written against.

A frontend plugin is a ``kernel.frontends`` entry point holding a :class:`FrontendPlugin` (see
docs/frontend-plugins.md). An HTTP/1.1 frontend needs no transport of its own: hand a
:class:`RequestHandler` to an :class:`HttpListener`, answer each :class:`HttpRequest` with a
:class:`Reply`, or with a :class:`StreamingReply` whose chunks are sent as they come (chunked
transfer encoding, with flow control). :func:`http_status` and :func:`grpc_status` map a
:class:`~kernel.KernelError`'s status to the code the kernel's own endpoints answer;
:func:`load_frontend_plugins` loads installed plugins as ``kernel serve`` does (a plugin's test
checks its entry point with it).

The names are imported on first use (PEP 562), so importing a submodule stays light and free of
import cycles (the endpoints import :mod:`kernel._server`, which knows nothing of them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel._errors import grpc_status as grpc_status
    from kernel._errors import http_status as http_status
    from kernel._frontend_plugins import FrontendPlugin as FrontendPlugin
    from kernel._frontend_plugins import load_frontend_plugins as load_frontend_plugins
    from kernel._options import FrontendConfig as FrontendConfig
    from kernel._server import Frontend as Frontend
    from kernel.frontends._http_server import HttpLimits as HttpLimits
    from kernel.frontends._http_server import HttpListener as HttpListener
    from kernel.frontends._http_server import HttpRequest as HttpRequest
    from kernel.frontends._http_server import Reply as Reply
    from kernel.frontends._http_server import RequestHandler as RequestHandler
    from kernel.frontends._http_server import StreamingReply as StreamingReply

__all__ = [
    "Frontend",
    "FrontendConfig",
    "FrontendPlugin",
    "HttpLimits",
    "HttpListener",
    "HttpRequest",
    "Reply",
    "RequestHandler",
    "StreamingReply",
    "grpc_status",
    "http_status",
    "load_frontend_plugins",
]

_WHERE = {
    "Frontend": "kernel._server",
    "FrontendConfig": "kernel._options",
    "FrontendPlugin": "kernel._frontend_plugins",
    "HttpLimits": "kernel.frontends._http_server",
    "HttpListener": "kernel.frontends._http_server",
    "HttpRequest": "kernel.frontends._http_server",
    "Reply": "kernel.frontends._http_server",
    "RequestHandler": "kernel.frontends._http_server",
    "StreamingReply": "kernel.frontends._http_server",
    "grpc_status": "kernel._errors",
    "http_status": "kernel._errors",
    "load_frontend_plugins": "kernel._frontend_plugins",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kernel.frontends' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
