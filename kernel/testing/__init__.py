"""Helpers for testing backends and deployments against a real server on loopback ports.

``ServerThread`` runs an :class:`~kernel.InferenceServer` in a background thread with its own
event loop, so synchronous clients (``tritonclient.http``/``grpc``) and async ones alike can talk
to it; ``run_server`` does the same inside the caller's event loop. Both bind free ports on
127.0.0.1. The pytest plugin (installed with the kernel) adds the ``kernel_server`` fixture
factory.

``unit_model`` and ``unit_instance`` make a backend's model and instance the way the kernel
makes them, without a server, for tests that call ``execute`` directly (``unit_request``,
``final_response`` and ``run_instance`` drive it).

``serve_command_line`` parses ``kernel serve``'s flags as the command does (a frontend
plugin's flags among them) and returns the settings the server would start with.

``simulated_gpus`` makes the kernel place instances as if GPUs were visible.

The real ``tritonclient`` over both protocols lives in :mod:`kernel.testing.clients`
(``TritonClients``, ``serving``), imported on its own: it needs the kernel's ``test`` extra.
"""

from kernel.testing._command_line import serve_command_line as serve_command_line
from kernel.testing._devices import simulated_gpus as simulated_gpus
from kernel.testing._server import RunningServer as RunningServer
from kernel.testing._server import ServerThread as ServerThread
from kernel.testing._server import run_server as run_server
from kernel.testing._server import test_options as test_options
from kernel.testing._server import write_model as write_model
from kernel.testing._units import final_response as final_response
from kernel.testing._units import model_context as model_context
from kernel.testing._units import run_instance as run_instance
from kernel.testing._units import unit_instance as unit_instance
from kernel.testing._units import unit_model as unit_model
from kernel.testing._units import unit_request as unit_request

__all__ = [
    "RunningServer",
    "ServerThread",
    "final_response",
    "model_context",
    "run_instance",
    "run_server",
    "serve_command_line",
    "simulated_gpus",
    "test_options",
    "unit_instance",
    "unit_model",
    "unit_request",
    "write_model",
]
