"""The ``python`` backend: Triton Python-backend models (``model.py``), in two execution modes.

Per model, ``parameters { key: "EXECUTION_MODE" value { string_value: "..." } }`` chooses:

* ``process`` (default): each instance runs in a process of its own (as Triton always does),
  tensors through shared memory. A model crash cannot take the server down: the requests it
  held fail, the process is restarted and ``initialize`` re-run, and a model whose process
  keeps failing to come back becomes ``UNAVAILABLE`` with the reason. Instances run in
  parallel without sharing a GIL, and the model sees what Triton's stub shows it.
* ``in_process``: instances run in the server process, each with its own copy of the model
  module. A request costs a few object allocations, no copy, no IPC; for trusted, trivial or
  I/O-bound models only (a crash there is the server's crash; instances share one GIL).

``EXECUTION_ENV_PATH`` (Triton's parameter) names a Python environment (a folder with
``bin/python``: a venv, a conda env, an unpacked conda-pack); the model's instances then run
with that interpreter, which implies ``process``. ``$$TRITON_MODEL_DIRECTORY`` in it stands
for the model folder. ``--backend-config=python,execution-mode=in_process`` changes the default
for every Python model; ``--backend-config=python,shm-directory=DIR`` moves the shared memory
slabs out of ``/dev/shm``; ``--backend-config=python,answer-wait-us=N`` caps how long the loop
looks for a quick model's answer when one client sends one request at a time (``_quick.py``;
default 150, 0 never).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio

from kernel import (
    Backend,
    BackendAttributes,
    BackendContext,
    InstanceContext,
    KernelError,
    Model,
    ModelConfig,
    ModelContext,
    ModelInstance,
    Status,
)
from triton_backend_python._config_json import config_from_model_json, config_to_model_json
from triton_backend_python._quick import LIMIT
from triton_backend_python._registry import MetricRegistry, registry_for
from triton_backend_python._runner import ModelLoadError, run_auto_complete
from triton_backend_python._wire import SHM_DIR

__all__ = [
    "EXECUTION_ENV_PATH",
    "EXECUTION_MODE",
    "IN_PROCESS",
    "PROCESS",
    "ExecutionSettings",
    "PythonBackend",
    "PythonModel",
]

EXECUTION_MODE = "EXECUTION_MODE"
EXECUTION_ENV_PATH = "EXECUTION_ENV_PATH"
IN_PROCESS = "in_process"
PROCESS = "process"
_MODES = (IN_PROCESS, PROCESS)
_PACKED = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    """How a model's instances run."""

    mode: str
    python: str
    """The interpreter of model processes."""
    foreign: bool
    """The interpreter is another environment's: it gets this plugin's pure-Python modules on
    ``PYTHONPATH`` and nothing else of the server's environment."""


def _check_mode(mode: str, where: str) -> str:
    if mode not in _MODES:
        raise KernelError(
            Status.INVALID_ARG,
            f"{where}: unknown execution mode '{mode}' (expected one of: {', '.join(_MODES)})",
        )
    return mode


def _environment_python(value: str, model_dir: Path, model_name: str) -> str:
    resolved = value.replace("$$TRITON_MODEL_DIRECTORY", str(model_dir))
    if resolved.endswith(_PACKED):
        raise KernelError(
            Status.UNSUPPORTED,
            f"model '{model_name}': EXECUTION_ENV_PATH '{resolved}' is a packed environment;"
            " unpack it and point EXECUTION_ENV_PATH at the folder",
        )
    path = Path(resolved)
    for candidate in (path / "bin" / "python3", path / "bin" / "python", path):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise KernelError(
        Status.INVALID_ARG,
        f"model '{model_name}': EXECUTION_ENV_PATH '{resolved}' holds no bin/python interpreter",
    )


def execution_settings(context: ModelContext, default_mode: str) -> ExecutionSettings:
    """The settings a model's config selects.

    :raises KernelError: ``INVALID_ARG`` for an unknown mode, an environment without an
        interpreter, or ``in_process`` together with an environment.
    """
    where = f"model '{context.name}': parameter '{EXECUTION_MODE}'"
    mode = _check_mode(context.parameter(EXECUTION_MODE) or default_mode, where)
    env = context.parameter(EXECUTION_ENV_PATH)
    if not env:
        return ExecutionSettings(mode, sys.executable, False)
    if context.parameter(EXECUTION_MODE) == IN_PROCESS:
        raise KernelError(
            Status.INVALID_ARG,
            f"{where}: '{IN_PROCESS}' cannot run with another environment"
            f" ({EXECUTION_ENV_PATH}); use '{PROCESS}'",
        )
    return ExecutionSettings(
        PROCESS, _environment_python(env, context.model_dir, context.name), True
    )


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _module_mentions(module: str, name: str = "auto_complete_config") -> bool:
    """Whether installed ``module``'s source mentions ``name`` (True when it cannot be read),
    found without importing the module itself."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return True
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return True
    return _mentions(Path(spec.origin), name)


def _mentions(path: Path, name: str) -> bool:
    """Whether the file's text mentions ``name`` (True when it cannot be read)."""
    try:
        return name in path.read_text(errors="replace")
    except OSError:
        return True


class PythonBackend(Backend):
    """Backend ``python``: serves ``model.py`` files written for Triton's Python backend."""

    attributes = BackendAttributes(parallel_instance_loading=True)

    def __init__(self) -> None:
        self.default_mode = PROCESS
        self.shm_directory = SHM_DIR
        """Where model processes' shared memory slabs live (a tmpfs: ``/dev/shm``)."""
        self.answer_wait = LIMIT
        """The longest the loop looks for a model process's answer (``_quick.py``), seconds."""
        self._staging: Path | None = None
        self._entry_points: Path | None = None

    def initialize(self, context: BackendContext) -> None:
        mode = context.config.get("execution-mode", PROCESS)
        self.default_mode = _check_mode(mode, "--backend-config=python,execution-mode")
        directory = context.config.get("shm-directory", SHM_DIR)
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise KernelError(
                Status.INVALID_ARG,
                f"--backend-config=python,shm-directory: '{directory}' is not a writable folder",
            )
        self.shm_directory = directory
        wait = context.config.get("answer-wait-us", f"{LIMIT * 1e6:g}")
        try:
            microseconds = int(wait)
        except ValueError:
            microseconds = -1
        if not 0 <= microseconds <= 10_000:
            raise KernelError(
                Status.INVALID_ARG,
                f"--backend-config=python,answer-wait-us: '{wait}' is not a whole number of"
                " microseconds from 0 to 10000",
            )
        self.answer_wait = microseconds / 1e6

    def create_model(self, context: ModelContext) -> Model:
        return PythonModel(context, self)

    def staging_path(self) -> str:
        """A folder holding only this plugin's pure-Python packages, for other environments."""
        if self._staging is None:
            staging = Path(tempfile.mkdtemp(prefix="triton-backend-python-"))
            here = Path(__file__).resolve().parent
            for package in (here, here.parent / "triton_python_backend_utils"):
                (staging / package.name).symlink_to(package, target_is_directory=True)
            self._staging = staging
        return str(self._staging)

    def entry_point_file(self, value: str) -> Path:
        """A ``model.py`` that is the ``TritonPythonModel`` of entry point ``value``
        (``module:Class``), so such a backend runs exactly as a ``model.py`` file does, in
        either execution mode (the model process imports the module by name)."""
        module, _, attr = value.partition(":")
        module, attr = module.strip(), attr.strip()
        if not _DOTTED.match(module) or not _DOTTED.match(attr) or "." in attr:
            raise KernelError(
                Status.INVALID_ARG,
                f"entry point '{value}' is not of the form 'module:TritonPythonModelClass'",
            )
        if self._entry_points is None:
            self._entry_points = Path(tempfile.mkdtemp(prefix="triton-python-backends-"))
        folder = self._entry_points / re.sub(r"[^0-9a-zA-Z_]", "_", value)
        path = folder / "model.py"
        if not path.is_file():
            folder.mkdir(exist_ok=True)
            # mentioning auto_complete_config makes process mode run it (see _mentions)
            hook = "auto_complete_config" if _module_mentions(module) else "no config hook"
            path.write_text(
                f"# The TritonPythonModel of entry point {value} ({hook}), written by\n"
                "# triton-backend-python.\n"
                f"from {module} import {attr} as TritonPythonModel  # noqa: F401\n"
            )
        return path

    def finalize(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._entry_points is not None:
            shutil.rmtree(self._entry_points, ignore_errors=True)
            self._entry_points = None


class PythonModel(Model):
    """One version of a Python model."""

    def __init__(self, context: ModelContext, backend: PythonBackend) -> None:
        super().__init__(context)
        self.backend = backend
        self._config_text = ""

    @property
    def model_file(self) -> Path:
        """The file whose ``TritonPythonModel`` serves this version: the version folder's
        ``model.py`` (or ``default_model_filename``), or a Python-based backend's (a ``.py``
        file the kernel found, or an installed entry point's class)."""
        source = self.context.python_model
        if not source:
            return self.context.model_file("model.py")
        if source.endswith(".py"):
            return Path(source)
        return self.backend.entry_point_file(source)

    @property
    def settings(self) -> ExecutionSettings:
        return execution_settings(self.context, self.backend.default_mode)

    @property
    def metrics(self) -> MetricRegistry:
        """The custom-metrics registry of this model's server."""
        registry = registry_for(self.context.server)
        self.context.server.add_metric_family(registry)
        return registry

    def child_environment(self) -> dict[str, str]:
        """The environment variables of this model's processes."""
        env = dict(os.environ)
        if self.settings.foreign:
            env.pop("PYTHONHOME", None)
            env["PYTHONPATH"] = self.backend.staging_path()
            # what sourcing the environment's bin/activate sets, as Triton's stub launcher does
            bin_dir = Path(self.settings.python).parent
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
            env["VIRTUAL_ENV"] = str(bin_dir.parent)
        return env

    async def auto_complete_config(self, config: ModelConfig) -> ModelConfig:
        settings = execution_settings(self.context, self.backend.default_mode)
        text = json.dumps(config_to_model_json(config))
        label = f"{self.context.name}_{self.context.version}"
        try:
            if settings.mode == IN_PROCESS:
                completed = await anyio.to_thread.run_sync(
                    run_auto_complete, self.model_file, label, text
                )
            elif not _mentions(self.model_file, "auto_complete_config"):
                completed = None  # nothing to run: spare a process start per load
            else:
                from triton_backend_python._process import process_auto_complete

                completed = await process_auto_complete(self, label, text)
        except ModelLoadError as exc:
            raise KernelError(Status.INVALID_ARG, str(exc)) from exc
        if completed is None:
            return config
        try:
            return config_from_model_json(completed, self.context.name)
        except ValueError as exc:
            raise KernelError(Status.INVALID_ARG, str(exc)) from exc

    def initialize(self) -> None:
        execution_settings(self.context, self.backend.default_mode)  # refuse bad parameters now
        if not self.model_file.is_file():
            raise KernelError(
                Status.INVALID_ARG,
                f"model '{self.context.name}': Python model file not found in '{self.model_file}'",
            )
        self._config_text = json.dumps(config_to_model_json(self.context.config))

    def instance_args(self, context: InstanceContext) -> dict[str, str]:
        """The ``args`` dict Triton hands ``TritonPythonModel.initialize``."""
        model = self.context
        return {
            "model_config": self._config_text,
            "model_instance_kind": context.kind.removeprefix("KIND_"),
            "model_instance_name": context.name,
            "model_instance_device_id": str(context.device_id),
            "model_repository": str(model.model_dir),
            "model_version": str(model.version),
            "model_name": model.name,
        }

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        if self.settings.mode == PROCESS:
            from triton_backend_python._process_instance import ProcessInstance

            return ProcessInstance(context, self)
        from triton_backend_python._in_process import InProcessInstance

        return InProcessInstance(context, self)
