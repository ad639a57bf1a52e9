"""The plugin contract: what a backend implements and what the kernel guarantees it.

It mirrors Triton's TRITONBACKEND object model:

* :class:`Backend` -- one object per process per backend name. ``initialize`` runs once, lazily,
  when the first model that needs the backend loads; ``finalize`` runs once at server exit, after
  every model of the backend was finalized.
* :class:`Model` -- one per loaded model version, made by :meth:`Backend.create_model`.
  ``auto_complete_config`` (optional) then ``initialize`` run at load; ``finalize`` at unload,
  after all of its instances were finalized.
* :class:`ModelInstance` -- one per ``instance_group`` entry times its ``count``, made by
  :meth:`Model.create_instance`. ``initialize`` runs after the model's; instances of one model
  initialize one after another, or concurrently when the backend declares
  ``BackendAttributes(parallel_instance_loading=True)``.

Threads and tasks. Every hook may be written ``async def`` (it then runs on the event loop and
must not block) or plain ``def`` (the kernel runs it in a worker thread). ``create_model`` and
``create_instance`` are plain factories run on the loop: keep them cheap and do the real work in
``initialize``. An instance executes one batch at a time; the instances of a model execute
concurrently.

Errors. A hook may raise anything: :class:`~kernel._errors.KernelError` keeps its status, any other
exception becomes ``INTERNAL``. A raising ``initialize`` (of backend, model or instance) makes
that model ``UNAVAILABLE`` with the error as its reason; other models keep serving. The kernel
finalizes what was initialized before the failure, in reverse order.

Answers. ``execute`` answers each request through the request (see
:mod:`kernel._inference`). When ``execute`` returns or raises, every request of a non-decoupled
model that is still unanswered gets an error; a decoupled model keeps its requests open as long
as it holds their response senders.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest, InferenceResponse
from kernel._proto.inference import ModelConfig
from kernel._statistics import MemoryUsage

__all__ = [
    "INSTANCE_READY_TIMEOUT_SECONDS",
    "Backend",
    "BackendAttributes",
    "BackendContext",
    "InstanceContext",
    "MemoryUsage",
    "MetricSource",
    "Model",
    "ModelContext",
    "ModelInstance",
    "ServerHandle",
]


@dataclass(frozen=True, slots=True)
class BackendAttributes:
    """What a backend declares about itself (``TRITONBACKEND_BackendAttribute*``)."""

    parallel_instance_loading: bool = False
    """Instances of one model may initialize concurrently."""
    preferred_instance_kind: str = ""
    """``KIND_CPU`` or ``KIND_GPU`` (Triton's ``BackendAttributeAddPreferredInstanceGroup``):
    the kind of a model's default instance group (a config without ``instance_group``) and of
    ``KIND_AUTO`` groups, where the server would otherwise pick KIND_GPU whenever a GPU is
    visible. A preferred KIND_GPU still falls back to KIND_CPU without a GPU. ``""``: no
    preference."""


class ServerHandle(Protocol):
    """What a model may ask of the server it runs in: in-process inference and model control."""

    def infer(self, request: InferenceRequest) -> AsyncIterator[InferenceResponse]:
        """Run ``request`` on another model in this process; yields its responses, last final."""
        ...

    async def load_model(
        self, name: str, config: str | None = None, files: Mapping[str, bytes] | None = None
    ) -> None:
        """Load (or reload) a model, as the repository API does."""
        ...

    async def unload_model(self, name: str, *, unload_dependents: bool = False) -> None:
        """Unload a model; with ``unload_dependents``, an ensemble's composing models too."""
        ...

    def is_model_ready(self, name: str, version: int = -1) -> bool:
        """Whether the model (the given version, or any) is loaded and ready."""
        ...

    async def model_ready(self, name: str, version: int = -1) -> bool:
        """:meth:`is_model_ready`, and its instances' :meth:`ModelInstance.ready` agree."""
        ...

    def add_metric_family(self, source: MetricSource) -> None:
        """Export ``source.render()`` (Prometheus text) on every ``/metrics`` scrape."""
        ...


class MetricSource(Protocol):
    """Prometheus text a plugin adds to every ``/metrics`` scrape (custom metric families)."""

    def render(self) -> str:
        """The families' HELP/TYPE lines and samples, in the Prometheus text format."""
        ...


@dataclass(slots=True)
class BackendContext:
    """Handed to :meth:`Backend.initialize`."""

    name: str
    """The backend name (``onnxruntime``, ``python``, ...)."""
    config: dict[str, str]
    """This backend's ``--backend-config=<name>,<key>=<value>`` settings."""
    logger: logging.Logger

    def int_setting(self, key: str, default: int) -> int:
        """An integer backend setting, or ``default`` when it is not given.

        :raises KernelError: ``INVALID_ARG`` naming the setting when it is not an integer.
        """
        value = self.config.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise KernelError(
                Status.INVALID_ARG,
                f"backend config '{key}' has the invalid value '{value}' (expected an integer)",
            ) from None


@dataclass(slots=True)
class ModelContext:
    """Everything a model gets from the kernel."""

    name: str
    version: int
    path: Path
    """The version folder (``<repository>/<model>/<version>``)."""
    model_dir: Path
    """The model folder (``<repository>/<model>``)."""
    config: ModelConfig
    """The model's config; after auto-complete, the completed one."""
    backend_config: dict[str, str]
    logger: logging.Logger
    server: ServerHandle
    auto_complete: bool = True
    """False when the server runs with ``--disable-auto-complete-config``."""
    on_unavailable: Callable[[str], None] | None = field(default=None, repr=False)
    """Set by the kernel: what :meth:`set_unavailable` calls."""
    python_model: str = ""
    """For a model served by a Python-based backend (Triton's term: a ``TritonPythonModel``
    shared by the models that name it): where that class comes from, the path of a ``.py``
    file or an installed entry point's ``module:Class``. Empty otherwise (the ``python``
    backend then serves the version folder's own ``model.py``)."""

    def set_unavailable(self, reason: str) -> None:
        """Report, from the loop, that the loaded model can no longer serve (say, a worker
        process it depends on died): it shows as ``UNAVAILABLE`` with ``reason`` and is not
        ready until reloaded. Requests that still reach it get the backend's errors."""
        if self.on_unavailable is not None:
            self.on_unavailable(reason)

    @property
    def repository(self) -> Path:
        """The repository folder holding the model folder."""
        return self.model_dir.parent

    @property
    def decoupled(self) -> bool:
        """``model_transaction_policy { decoupled: true }``."""
        policy = self.config.model_transaction_policy
        return bool(policy is not None and policy.decoupled)

    def parameter(self, key: str, default: str | None = None) -> str | None:
        """The string value of a ``parameters { key: ... value { string_value: ... } }`` entry."""
        found = self.config.parameters.get(key)
        return default if found is None else found.string_value

    def model_file(self, default_name: str) -> Path:
        """The model file: ``default_model_filename`` if set, else ``default_name``."""
        return self.path / (self.config.default_model_filename or default_name)


@dataclass(slots=True)
class InstanceContext:
    """Everything a model instance gets from the kernel."""

    name: str
    """Triton's instance name, ``<group name>_<index>`` (``add_0_0``)."""
    kind: str
    """``KIND_CPU``, ``KIND_GPU`` or ``KIND_MODEL``."""
    device_id: int
    model: ModelContext
    logger: logging.Logger
    _times: list[int] = field(default_factory=list, repr=False)

    def report_times(
        self, compute_input_ns: int, compute_infer_ns: int, compute_output_ns: int
    ) -> None:
        """Report how the current batch's time split; otherwise all of it counts as infer."""
        self._times[:] = [compute_input_ns, compute_infer_ns, compute_output_ns]

    def take_reported_times(self) -> tuple[int, int, int] | None:
        """For the kernel: the split reported during the last ``execute``, then forget it."""
        if not self._times:
            return None
        a, b, c = self._times
        self._times.clear()
        return a, b, c


class ModelInstance(ABC):
    """One execution instance of a model. Subclass it and implement :meth:`execute`."""

    overlapping_batches: ClassVar[int] = 1
    """How many calls of an ``async def execute`` the kernel may have running at once on this
    instance (at most two behind the dynamic batcher, one behind the sequence batcher; a
    plain ``def execute`` is fed by the kernel's own thread and ignores it). Raise it when
    ``execute`` hands its batch to something that runs batches one at a time in order (a
    process, a device queue): the next batch is then already there when one finishes, instead
    of a round trip through the event loop later."""

    def __init__(self, context: InstanceContext) -> None:
        self.context = context

    def initialize(self) -> Awaitable[None] | None:
        """Prepare to execute (``TRITONBACKEND_ModelInstanceInitialize``).

        :raises Exception: any error makes the whole model ``UNAVAILABLE`` with it as reason.
        """
        return None

    @abstractmethod
    def execute(self, requests: Sequence[InferenceRequest]) -> Awaitable[None] | None:
        """Run one batch and answer each request (``TRITONBACKEND_ModelInstanceExecute``).

        Called for one batch at a time per instance (an ``async def`` for up to
        :attr:`overlapping_batches` at a time). ``def`` runs in the instance's own thread,
        ``async def`` on the loop; the kernel looks at ``execute`` once ``initialize``
        returned, so an instance may pick its ``execute`` there. Raising answers every
        unanswered request with the error.
        """

    def finalize(self) -> Awaitable[None] | None:
        """Release what ``initialize`` took (``TRITONBACKEND_ModelInstanceFinalize``)."""
        return None

    def submit(
        self,
        requests: Sequence[InferenceRequest],
        done: Callable[[BaseException | None], None],
    ) -> None:
        """Optional fast path of an ``async def execute`` that hands its batch to something
        else (a process, a device queue): start the batch on the event loop without blocking,
        and call ``done`` on the loop once the batch is done, with the error that fails its
        unanswered requests (as a raise from ``execute`` would) or None. Call it right after
        answering the batch, in the same callback: the kernel's accounting (statistics, trace
        timestamps) then comes before the answers reach the frontends. Raising from ``submit``
        fails the batch. When an instance overrides it, the kernel calls it instead of
        ``execute`` for unbatched requests (no rate limiter): no task per batch. When the model
        unloads, the kernel fails the batches still out and ignores their later ``done``.
        ``execute`` stays the general path (warm-up, batching schedulers). Behind the default
        scheduler a request may reach ``submit`` from within its own admission (tracing off;
        with tracing on, a loop turn later, so that a batch answered within ``submit`` still
        gets its compute timestamps): ``done`` may come before ``submit`` returns.
        """
        raise NotImplementedError

    def ready(self) -> Awaitable[bool] | bool:
        """Whether this loaded instance can serve now (``TRITONBACKEND_ModelInstanceReady``).

        Optional. Asked on every model readiness check (the ready endpoints of both protocols,
        ``ServerHandle.model_ready``), never per request: the model is ready only when every
        instance that overrides this says True within :data:`INSTANCE_READY_TIMEOUT_SECONDS`;
        False, an exception or no answer in time make it not ready for that check. ``def``
        runs in a worker thread, ``async def`` on the loop.
        """
        return True


INSTANCE_READY_TIMEOUT_SECONDS = 5.0
"""How long a readiness check waits for :meth:`ModelInstance.ready` (Triton's 5 s)."""


class Model(ABC):
    """One loaded version of a model. Subclass it and implement :meth:`create_instance`."""

    def __init__(self, context: ModelContext) -> None:
        self.context = context

    def auto_complete_config(self, config: ModelConfig) -> ModelConfig | Awaitable[ModelConfig]:
        """Return ``config`` completed from the model file (inputs, outputs, batching).

        Called before :meth:`initialize` unless auto-complete is disabled. Complete what is
        missing, never override what the user wrote; raise when the two contradict.
        """
        return config

    def initialize(self) -> Awaitable[None] | None:
        """Load what every instance shares (``TRITONBACKEND_ModelInitialize``)."""
        return None

    @abstractmethod
    def create_instance(self, context: InstanceContext) -> ModelInstance:
        """Make one instance (cheap; its ``initialize`` does the work)."""

    def memory_usage(
        self,
    ) -> Sequence[MemoryUsage] | Awaitable[Sequence[MemoryUsage] | None] | None:
        """The memory this version holds, model and instances together, per device (optional).

        Called once, after every instance initialized (and warm-up ran), before the version
        serves; shown as ``memory_usage`` by the statistics API (both protocols). ``None``,
        the default, means the backend cannot tell (an empty list is shown). Report what can
        be measured, and say in the backend's documentation how (weights, arenas, ...). An
        exception is logged and reported as ``None``: it never fails the load.
        """
        return None

    def finalize(self) -> Awaitable[None] | None:
        """Release the model (``TRITONBACKEND_ModelFinalize``), after all its instances."""
        return None


class Backend(ABC):
    """A backend: found by its entry point in ``kernel.backends``, one object per process."""

    attributes: ClassVar[BackendAttributes] = BackendAttributes()

    def initialize(self, context: BackendContext) -> Awaitable[None] | None:
        """Called once, before the first model of this backend (``TRITONBACKEND_Initialize``).

        :raises Exception: makes every model of this backend ``UNAVAILABLE`` with the reason.
        """
        return None

    @abstractmethod
    def create_model(self, context: ModelContext) -> Model:
        """Make the :class:`Model` for one model version (cheap; ``initialize`` does the work)."""

    def finalize(self) -> Awaitable[None] | None:
        """Called once at server exit, after all of this backend's models were finalized."""
        return None
