"""Model control: which model versions are loaded, loading and unloading them, routing to them.

The manager owns one task group; every loaded :class:`~kernel._models.ModelVersion` runs as a task
in it. Loads and unloads of one model are serialized by that model's lock; different models load
concurrently. A reload starts the new versions first and swaps them in only once they are ready;
the versions they replace then drain the requests they accepted before finalizing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup, TaskStatus

from kernel._backend import Backend, ModelContext, ServerHandle
from kernel._devices import visible_gpus
from kernel._discovery import PYTHON_BACKEND, runtime_backend_name
from kernel._errors import KernelError, Status
from kernel._inference_target import InferenceTarget
from kernel._models import ModelState, ModelVersion, SchedulerFactory
from kernel._options import ModelControlMode
from kernel._proto.inference import ModelConfig
from kernel._registry import BackendRegistry, backend_settings
from kernel._repository import (
    ModelRepository,
    ModelSource,
    backend_name,
    check_model_name,
    normalize_config,
    select_versions,
)
from kernel._scheduling import EnsembleBackend
from kernel._unhonoured import unhonoured_fields

__all__ = ["ModelIndexEntry", "ModelManager"]

log = logging.getLogger("kernel.manager")

LOAD_PROGRESS_SECS = 10.0
"""How often a model version that is still loading says so in the log."""


async def _start_with_progress(
    tg: TaskGroup, version: ModelVersion, name: str, number: int
) -> None:
    """Start ``version`` in ``tg`` and log its load: a line when it starts, one every
    :data:`LOAD_PROGRESS_SECS` while it runs (a slow load is visible while it happens), and one
    when it is ready or failed, with the elapsed time.

    :raises Exception: whatever the version's start raised.
    """
    started = anyio.current_time()
    log.info("loading: %s:%d", name, number, extra={"model": name})

    async def tick() -> None:
        while True:
            await anyio.sleep(LOAD_PROGRESS_SECS)
            log.info(
                "still loading: %s:%d (%.0fs)",
                name,
                number,
                anyio.current_time() - started,
                extra={"model": name},
            )

    failure: BaseException | None = None
    async with anyio.create_task_group() as ticker:
        ticker.start_soon(tick)
        try:
            await tg.start(version.run)
        except BaseException as exc:  # re-raised below, once the ticker stopped
            failure = exc
        ticker.cancel_scope.cancel()
    elapsed = anyio.current_time() - started
    if failure is not None:
        reason = failure.message if isinstance(failure, KernelError) else str(failure)
        log.error(
            "failed to load: %s:%d after %.2fs: %s",
            name,
            number,
            elapsed,
            reason,
            extra={"model": name},
        )
        raise failure
    log.info("READY: %s:%d loaded in %.2fs", name, number, elapsed, extra={"model": name})


@dataclass(frozen=True, slots=True)
class ModelIndexEntry:
    """One row of the repository index."""

    name: str
    version: str
    state: str
    reason: str


@dataclass(slots=True)
class _Entry:
    name: str
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    state: ModelState = ModelState.UNKNOWN
    """The model's state when no version serves (loading, unavailable, unloaded)."""
    reason: str = ""
    failed_versions: dict[int, str] = field(default_factory=dict)
    source: ModelSource | None = None
    fingerprint: tuple[tuple[str, int, int], ...] | None = None
    """The model folder's files at the last load attempt (poll mode reloads on a change)."""


def check_honoured(config: ModelConfig, config_path: str) -> None:
    """Log each field of ``config`` this server does not implement; fail on the first that
    would make its answers wrong (see :mod:`kernel._unhonoured`).

    :raises KernelError: ``INVALID_ARG`` naming the file and field.
    """
    for item in unhonoured_fields(config):
        if item.severity == "error":
            raise KernelError(Status.INVALID_ARG, f"{config_path}: {item}")
        log.warning("model '%s': %s: %s", config.name, config_path, item)


class ModelManager:
    """Loads, unloads, reloads and routes to the model versions of one server."""

    def __init__(
        self,
        repository: ModelRepository,
        registry: BackendRegistry,
        *,
        server: ServerHandle,
        auto_complete: bool = True,
        backend_config: dict[str, dict[str, str]] | None = None,
        drain_timeout: float = 30.0,
        scheduler_factory: SchedulerFactory | None = None,
        load_retry_count: int = 0,
    ) -> None:
        self.repository = repository
        self.load_retry_count = load_retry_count
        """tritonserver's ``--model-load-retry-count``: a version whose load fails is tried
        this many more times before the model is UNAVAILABLE."""
        self.registry = registry
        self._server = server
        self._auto_complete = auto_complete
        self._backend_config = backend_config or {}
        self.drain_timeout = drain_timeout
        self._scheduler_factory = scheduler_factory
        self._entries: dict[str, _Entry] = {}
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self._load_order: list[ModelVersion] = []
        self._targets: dict[ModelVersion, InferenceTarget] = {}
        """The frontends' view of every version routed to (see :meth:`prepare`)."""
        self._ensembles = EnsembleBackend(self)
        """The kernel's own backend for ``platform: "ensemble"`` (never in the registry)."""

    # -- life of the manager ----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own every model task until :meth:`close`; then unload all, last loaded first."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await self._closed.wait()
                with anyio.CancelScope(shield=True):
                    await self._unload_all()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self.repository.close()

    def close(self) -> None:
        """Ask :meth:`run` to unload every model and return."""
        self._closed.set()

    async def _unload_all(self) -> None:
        for version in reversed(self._load_order):
            version.stop()
            await version.finished.wait()
        self._load_order.clear()
        self._targets.clear()
        for entry in self._entries.values():
            entry.versions.clear()

    # -- model control ------------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry(name)
        return entry

    async def load_startup(self, mode: ModelControlMode, names: list[str]) -> None:
        """Load what tritonserver loads at start: every model, or the ``--load-model`` ones."""
        if mode is ModelControlMode.EXPLICIT and "*" not in names:
            wanted = names
        else:
            found, problems = self.repository.scan()
            wanted = sorted(set(found) | set(problems))
            for name in problems:
                entry = self._entry(name)
                entry.state, entry.reason = ModelState.UNAVAILABLE, problems[name]
        async with anyio.create_task_group() as tg:
            for name in wanted:
                tg.start_soon(self._load_quietly, name)

    async def _load_quietly(self, name: str) -> None:
        with contextlib.suppress(KernelError):  # load() logged it, once
            await self.load(name)

    async def load(
        self, name: str, config: str | None = None, files: Mapping[str, bytes] | None = None
    ) -> None:
        """Load or reload model ``name``; ``config`` is a JSON override, ``files`` contents.

        In-flight requests on replaced versions complete on them; new requests go to the new
        versions once all of them are ready. A failed reload keeps the old versions serving.

        :raises KernelError: why the load failed (the model's index entry says it too).
        """
        assert self._tg is not None, "the model manager is not running"
        check_model_name(name)
        entry = self._entry(name)
        async with entry.lock:
            try:
                if not files:
                    entry.fingerprint = self._fingerprint(name)
                source = self.repository.read(name, config_override=config, files=dict(files or {}))
                gpus = len(visible_gpus())
                backend = backend_name(source.config, source.config_path)
                preferred = ""
                if gpus and backend != "ensemble":  # the backend's preference decides
                    plugin_name = backend
                    if str(source.config.runtime or "").endswith(".py"):
                        plugin_name = PYTHON_BACKEND  # whichever version folder holds it
                    elif source.config.runtime:
                        plugin_name = runtime_backend_name(str(source.config.runtime))
                    resolved = await self.registry.resolve(
                        ModelConfig(name=source.config.name), plugin_name, source.model_dir, 0
                    )
                    preferred = resolved.backend.attributes.preferred_instance_kind
                normalize_config(
                    source.config, source.config_path, gpus=gpus, preferred_kind=preferred
                )
                check_honoured(source.config, source.config_path)
                versions = select_versions(source)
            except KernelError as exc:
                self._fail(entry, exc.message)
                log.error("failed to load '%s': %s", name, exc.message, extra={"model": name})
                raise
            if not entry.versions:
                entry.state, entry.reason = ModelState.LOADING, ""
            started: dict[int, ModelVersion] = {}
            entry.failed_versions.clear()
            logged = False  # a version's failed start is logged where it happens, once
            try:
                for number in versions:
                    plugin: Backend = self._ensembles
                    python_model = ""
                    if backend != "ensemble":
                        resolved = await self.registry.resolve(
                            source.config, backend, source.model_dir, number
                        )
                        plugin, python_model = resolved.backend, resolved.python_model
                        if resolved.where:
                            log.info(
                                "model '%s' version %d: backend '%s' from %s",
                                name,
                                number,
                                backend,
                                resolved.where,
                                extra={"model": name},
                            )
                    attempt = 0
                    version: ModelVersion | None = None
                    while version is None:
                        version = ModelVersion(
                            plugin,
                            ModelContext(
                                name=name,
                                version=number,
                                path=source.model_dir / str(number),
                                model_dir=source.model_dir,
                                config=source.config.__class__.parse(bytes(source.config)),
                                backend_config=backend_settings(self._backend_config, backend),
                                logger=logging.getLogger(f"kernel.model.{name}"),
                                server=self._server,
                                auto_complete=self._auto_complete,
                                python_model=python_model,
                            ),
                            drain_timeout=self.drain_timeout,
                            scheduler_factory=self._scheduler_factory,
                        )
                        try:
                            await _start_with_progress(self._tg, version, name, number)
                        except Exception as exc:
                            logged = True
                            version = None
                            error = KernelError.wrap(exc)
                            if attempt < self.load_retry_count:
                                attempt += 1
                                log.warning(
                                    "loading '%s' version %d failed (%s): retry %d of %d",
                                    name,
                                    number,
                                    error.message,
                                    attempt,
                                    self.load_retry_count,
                                )
                                continue
                            entry.failed_versions[number] = error.message
                            raise KernelError(
                                Status.INVALID_ARG,
                                f"load failed for model '{name}': version {number} is at"
                                f" UNAVAILABLE state: {error.message};",
                            ) from exc
                    started[number] = version
            except KernelError as exc:
                for version in started.values():
                    version.stop()
                if not entry.versions:
                    self._fail(entry, exc.message)
                    if not entry.failed_versions:
                        entry.failed_versions = dict.fromkeys(versions, exc.message)
                if not logged:
                    log.error("%s", exc.message, extra={"model": name})
                raise
            old = entry.versions
            for version in started.values():
                self._targets[version] = InferenceTarget(version)
            entry.versions = started
            entry.source = source
            entry.state, entry.reason = ModelState.READY, ""
            self._load_order.extend(started.values())
            for replaced in old.values():
                self._retire(replaced)
            log.info("loaded '%s' versions %s", name, sorted(started), extra={"model": name})

    async def ensure_loaded(self, name: str) -> None:
        """Load ``name`` unless a version of it serves (an ensemble's steps). A load of it in
        progress is waited for, not repeated.

        :raises KernelError: why the load failed.
        """
        entry = self._entry(name)
        async with entry.lock:
            if entry.versions:
                return
        await self.load(name)

    def _retire(self, version: ModelVersion) -> None:
        """Stop a version no longer routed to; it drains in the background."""
        version.stop()
        self._targets.pop(version, None)
        if version in self._load_order:
            self._load_order.remove(version)
        if self._tg is not None:
            self._tg.start_soon(version.finished.wait)

    def _fail(self, entry: _Entry, reason: str) -> None:
        if not entry.versions:
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        if entry.source is not None and entry.source.temporary and not entry.versions:
            self.repository.release(entry.name)

    def _composing(self, name: str) -> list[str]:
        """The models the loaded versions of ensemble ``name`` run, nested ensembles' too,
        each once, in the order their steps name them."""
        found: list[str] = []
        todo = [name]
        while todo:
            entry = self._entries.get(todo.pop(0))
            for version in entry.versions.values() if entry is not None else ():
                scheduling = version.config.ensemble_scheduling
                for step in scheduling.step if scheduling is not None else ():
                    if step.model_name not in found and step.model_name != name:
                        found.append(step.model_name)
                        todo.append(step.model_name)
        return found

    async def unload(self, name: str, *, unload_dependents: bool = False) -> None:
        """Unload every version of ``name``; returns once they finalized. With
        ``unload_dependents`` (the repository API's parameter), an ensemble's composing models
        are unloaded after it, as Triton does.

        Unloading a model that is not loaded, or not known at all, succeeds (as in Triton).

        :raises KernelError: ``INVALID_ARG`` for a name no model can have.
        """
        check_model_name(name)
        composing = self._composing(name) if unload_dependents else []
        await self._unload_one(name)
        for model in composing:
            await self._unload_one(model)

    async def _unload_one(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        async with entry.lock:
            versions = list(entry.versions.values())
            entry.versions = {}
            entry.state, entry.reason = ModelState.UNLOADING, ""
            for version in versions:
                version.state = ModelState.UNLOADING
                version.stop()
                self._targets.pop(version, None)
                if version in self._load_order:
                    self._load_order.remove(version)
            for version in versions:
                await version.finished.wait()
            entry.state, entry.reason = ModelState.UNAVAILABLE, "unloaded"
            # The index keeps listing the unloaded versions, as Triton's does.
            entry.failed_versions = {version.version: "unloaded" for version in versions}
            if entry.source is not None and entry.source.temporary:
                self.repository.release(name)
            log.info("unloaded '%s'", name, extra={"model": name})

    def _fingerprint(self, name: str) -> tuple[tuple[str, int, int], ...] | None:
        found, _ = self.repository.scan()
        model_dir = found.get(name)
        return None if model_dir is None else self.repository.fingerprint(model_dir)

    async def poll(self) -> None:
        """One poll of the repositories: load new models, reload changed ones (a failed model
        is retried only once its files change), unload the ones whose folder is gone."""
        found, problems = self.repository.scan()
        for name, reason in problems.items():
            entry = self._entry(name)
            if not entry.versions:
                entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        async with anyio.create_task_group() as tg:
            for name, model_dir in found.items():
                if name in problems:
                    continue
                known = self._entries.get(name)
                if known is None or known.fingerprint is None:
                    if known is None or known.reason != "unloaded":
                        tg.start_soon(self._load_quietly, name)
                elif self.repository.fingerprint(model_dir) != known.fingerprint:
                    tg.start_soon(self._load_quietly, name)
            for name, entry in list(self._entries.items()):
                temporary = entry.source is not None and entry.source.temporary
                if name not in found and entry.versions and not temporary:
                    tg.start_soon(self.unload, name)

    # -- routing and reporting ----------------------------------------------------------------

    def route(self, name: str, version: int = -1) -> ModelVersion:
        """The ready version serving ``name`` (the highest when ``version`` is -1).

        :raises KernelError: with Triton's messages for unknown models and versions.
        """
        entry = self._entries.get(name)
        if entry is None or not entry.versions:
            check_model_name(name)  # only here, off the hot path: a served name is valid
            if entry is None or entry.state is ModelState.UNKNOWN:
                raise KernelError(
                    Status.NOT_FOUND, f"Request for unknown model: '{name}' is not found"
                )
            raise KernelError(
                Status.NOT_FOUND,
                f"Request for unknown model: '{name}' has no available versions",
            )
        if version < 0:
            return entry.versions[max(entry.versions)]
        found = entry.versions.get(version)
        if found is None:
            raise KernelError(
                Status.NOT_FOUND,
                f"Request for unknown model: '{name}' version {version} is not found",
            )
        return found

    def prepare(self, name: str, version: int = -1) -> InferenceTarget:
        """The target of a request for ``name``/``version``: :meth:`route` plus a ready check.

        :raises KernelError: as :meth:`route`; ``UNAVAILABLE`` when the version is not ready.
        """
        chosen = self.route(name, version)
        if chosen.state is not ModelState.READY:
            raise KernelError(
                Status.UNAVAILABLE,
                f"Request for unknown model: '{name}' version {chosen.version} is not at ready"
                f" state: {chosen.reason or chosen.state.value}",
            )
        return self._targets[chosen]

    def is_ready(self, name: str, version: int = -1) -> bool:
        try:
            return self.route(name, version).state is ModelState.READY
        except KernelError:
            return False

    def loaded_versions(self) -> list[ModelVersion]:
        """Every version currently routed to, by model name then version."""
        return [
            entry.versions[number]
            for name, entry in sorted(self._entries.items())
            for number in sorted(entry.versions)
        ]

    def all_ready(self) -> bool:
        """Whether every model the server tried to load is ready (strict readiness)."""
        return all(
            bool(entry.versions)
            for entry in self._entries.values()
            if entry.state is not ModelState.UNKNOWN and entry.reason != "unloaded"
        )

    def index(self, *, ready_only: bool = False) -> list[ModelIndexEntry]:
        """The repository index: every model in the repositories or loaded, with states."""
        found, _ = self.repository.scan()
        names = sorted(set(found) | set(self._entries))
        rows: list[ModelIndexEntry] = []
        for name in names:
            entry = self._entries.get(name)
            if entry is None or (entry.state is ModelState.UNKNOWN and not entry.versions):
                if not ready_only:
                    rows.append(ModelIndexEntry(name, "", "", ""))
                continue
            if entry.versions:
                for number in sorted(entry.versions):
                    version = entry.versions[number]
                    rows.append(
                        ModelIndexEntry(name, str(number), version.state.value, version.reason)
                    )
                continue
            if ready_only:
                continue
            if entry.failed_versions:
                for number, reason in sorted(entry.failed_versions.items()):
                    rows.append(ModelIndexEntry(name, str(number), entry.state.value, reason))
            else:
                rows.append(ModelIndexEntry(name, "", entry.state.value, entry.reason))
        return rows
