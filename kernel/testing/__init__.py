"""Helpers for testing backends and deployments against a real server on loopback ports.

``ServerThread`` runs an :class:`~kernel.InferenceServer` in a background thread with its own
event loop, so synchronous clients (``tritonclient.http``/``grpc``) and async ones alike can talk
to it; ``run_server`` does the same inside the caller's event loop. Both bind free ports on
127.0.0.1. The pytest plugin (installed with the kernel) adds the ``kernel_server`` fixture
factory.
"""

from kernel.testing._server import RunningServer as RunningServer
from kernel.testing._server import ServerThread as ServerThread
from kernel.testing._server import run_server as run_server
from kernel.testing._server import test_options as test_options
from kernel.testing._server import write_model as write_model

__all__ = ["RunningServer", "ServerThread", "run_server", "test_options", "write_model"]
