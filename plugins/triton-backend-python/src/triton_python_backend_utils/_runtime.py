"""What the API asks of the server a model runs in, and how it finds that server.

The functions of ``triton_python_backend_utils`` (BLS ``exec``, ``load_model``, ``Logger``,
``MetricFamily``, response senders) are process-global in Triton's API. Here they go to a
:class:`Runtime`: the in-process one talks to the kernel directly, the one in an isolated model
process talks to the server over its pipe. The backend sets the current runtime around every
call into a model (``initialize``, ``execute``, ``finalize``), in a context variable, so several
models (and several servers) in one process each reach their own. Threads a model starts itself
do not inherit context variables; they reach the runtime of the model instance initialized
last in the process (exact in an isolated model process, where there is only one).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from triton_python_backend_utils._errors import TritonModelException

if TYPE_CHECKING:
    from triton_python_backend_utils._inference import (
        InferenceRequest,
        InferenceResponse,
        ResponseIterator,
    )

__all__ = [
    "BLS_OUTSIDE_EXECUTE",
    "MetricsBackend",
    "ResponseChannel",
    "Runtime",
    "current_runtime",
    "forget_fallback_runtime",
    "installed_runtime",
    "pop_runtime",
    "push_runtime",
    "runtime_or_none",
    "set_fallback_runtime",
]


BLS_OUTSIDE_EXECUTE = "BLS is only supported during the 'execute' function."
"""Triton's message for a BLS call made while the model initializes or finalizes."""


class ResponseChannel(Protocol):
    """Where the responses of one received request go."""

    def send(self, response: InferenceResponse | None, final: bool) -> None:
        """Deliver a response (None only with ``final``); called from any thread."""
        ...

    def is_cancelled(self) -> bool:
        """Whether the client is gone or the request timed out."""
        ...

    def abandon(self) -> None:
        """The sender was released without the final flag: close the request with an error."""
        ...


class MetricsBackend(Protocol):
    """The custom-metrics registry a model's ``MetricFamily`` objects live in.

    Families and metrics are named by opaque handles; ``release_*`` is called when the model's
    object is garbage collected.
    """

    def create_family(self, name: str, description: str, kind: int) -> object: ...

    def release_family(self, family: object) -> None: ...

    def create_metric(
        self, family: object, labels: Mapping[str, str], buckets: list[float] | None
    ) -> object: ...

    def release_metric(self, metric: object) -> None: ...

    def update(self, metric: object, op: str, value: float) -> None:
        """``op`` is ``increment``, ``set`` or ``observe``."""
        ...

    def value(self, metric: object) -> float: ...


class Runtime(Protocol):
    """The server side of the API for one model instance."""

    def response_channel(self, request: InferenceRequest) -> ResponseChannel:
        """The channel answering ``request`` (a request this instance received)."""
        ...

    def is_cancelled(self, request: InferenceRequest) -> bool: ...

    def exec(
        self, request: InferenceRequest, decoupled: bool
    ) -> InferenceResponse | ResponseIterator:
        """Run a BLS request and block until its response (or, decoupled, a response iterator)."""
        ...

    def async_exec(
        self, request: InferenceRequest, decoupled: bool
    ) -> Awaitable[InferenceResponse | ResponseIterator]:
        """Run a BLS request from a coroutine."""
        ...

    def log(self, level: int, message: str) -> None: ...

    @property
    def metrics(self) -> MetricsBackend: ...

    def load_model(self, name: str, config: str, files: Mapping[str, bytes] | None) -> None: ...

    def unload_model(self, name: str, unload_dependents: bool) -> None: ...

    def is_model_ready(self, name: str, version: str) -> bool: ...

    def model_dir(self) -> str:
        """The model's version folder (``get_model_dir()``)."""
        ...


_current: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "triton_python_backend_runtime", default=None
)
# Only for threads a model starts itself (they do not inherit the context variable).
_fallback: list[Runtime] = []


def set_fallback_runtime(runtime: Runtime) -> None:
    """Make ``runtime`` the one reached from threads outside any model call."""
    _fallback[:] = [runtime]


def forget_fallback_runtime(runtime: Runtime) -> None:
    """Stop reaching ``runtime`` from threads (when its instance is finalized)."""
    if _fallback and _fallback[0] is runtime:
        _fallback.clear()


def runtime_or_none() -> Runtime | None:
    """The runtime of the model being called in this context, else the fallback, else None."""
    runtime = _current.get()
    if runtime is None and _fallback:
        return _fallback[0]
    return runtime


def current_runtime() -> Runtime:
    """The runtime of the calling model.

    :raises TritonModelException: when called outside a model served by triton-kernel.
    """
    runtime = runtime_or_none()
    if runtime is None:
        raise TritonModelException(
            "this triton_python_backend_utils call needs a model served by triton-kernel's"
            " Python backend (it was made outside of one)"
        )
    return runtime


def push_runtime(runtime: Runtime) -> contextvars.Token[Runtime | None]:
    """Make ``runtime`` current; undo with :func:`pop_runtime` (the per-batch fast path)."""
    return _current.set(runtime)


def pop_runtime(token: contextvars.Token[Runtime | None]) -> None:
    """Undo :func:`push_runtime`."""
    _current.reset(token)


@contextlib.contextmanager
def installed_runtime(runtime: Runtime) -> Iterator[None]:
    """Make ``runtime`` current for the ``with`` block (around one call into a model)."""
    token = _current.set(runtime)
    try:
        yield
    finally:
        _current.reset(token)
