"""One model instance's own copy of ``model.py``, and Triton's rules for what its hooks return.

Every instance imports ``model.py`` under a module name of its own, so module globals never
leak between instances (Triton gets the same from one process per instance). As in Triton, the
version folder is put on ``sys.path`` so ``model.py`` can import the modules next to it.
No kernel import: this runs in the server process and in isolated model processes alike.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import triton_python_backend_utils as pb_utils

__all__ = [
    "ExecuteError",
    "ModelLoadError",
    "ModelRunner",
    "load_model_module",
    "run_auto_complete",
    "unload_model_module",
]

_RESCHEDULE = pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE
_module_numbers = itertools.count(1)
# sys.path is process-global: count the instances that need each version folder on it.
_path_lock = threading.Lock()
_path_users: dict[str, int] = {}


class ModelLoadError(Exception):
    """``model.py`` is missing, fails to import, or lacks what Triton requires of it."""


class ExecuteError(Exception):
    """``execute`` raised or returned something Triton refuses; the message is Triton's."""


def _use_path(folder: str) -> None:
    with _path_lock:
        count = _path_users.get(folder, 0)
        if count == 0 and folder not in sys.path:
            sys.path.append(folder)
        _path_users[folder] = count + 1


def _release_path(folder: str) -> None:
    with _path_lock:
        count = _path_users.get(folder, 0) - 1
        if count > 0:
            _path_users[folder] = count
            return
        _path_users.pop(folder, None)
        if folder in sys.path:
            sys.path.remove(folder)


def _triton_package(folder: Path) -> str:
    """The version folder as the package Triton's stub imports ``model.py`` from (``1``).

    Made by hand (a namespace package over the folder) rather than found on ``sys.path``, so no
    other folder named like the version can stand in for it."""
    name = folder.name
    package = sys.modules.get(name)
    if package is None or list(getattr(package, "__path__", ())) != [str(folder)]:
        package = ModuleType(name)
        package.__path__ = [str(folder)]
        package.__package__ = name
        sys.modules[name] = package
    return name


def load_model_module(path: Path, label: str, *, as_triton: bool = False) -> ModuleType:
    """Import ``path`` as a new module named after ``label`` (never shared with another load).

    ``as_triton`` (a model process holds one model): import it as Triton's stub does, as
    ``<version>.<file stem>`` (``__name__ == "1.model"``) with the version folder and the model
    folder on ``sys.path``, so relative imports of the files beside it work.

    :raises ModelLoadError: when the file is missing or raises on import.
    """
    if not path.is_file():
        raise ModelLoadError(f"Python model file not found in '{path}'")
    if as_triton:
        name = f"{_triton_package(path.parent)}.{path.stem}"
    else:
        name = f"_triton_model_{re.sub(r'[^0-9a-zA-Z_]', '_', label)}_{next(_module_numbers)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import Python model file '{path}'")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    sys.modules[name] = module  # dataclasses, pickle and typing resolve a module by name
    _use_path(folder)
    if as_triton:
        _use_path(str(path.parent.parent))  # after the version folder, as Triton's stub
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        _release_path(folder)
        raise ModelLoadError(
            f"failed to import Python model file '{path}': {type(exc).__name__}: {exc}"
        ) from exc
    return module


def unload_model_module(module: ModuleType) -> None:
    """Forget a module :func:`load_model_module` made (its objects live while referenced)."""
    sys.modules.pop(module.__name__, None)
    if module.__file__:
        _release_path(str(Path(module.__file__).parent))


def _model_class(module: ModuleType, path: Path) -> type[Any]:
    cls = getattr(module, "TritonPythonModel", None)
    if not isinstance(cls, type):
        raise ModelLoadError(f"Python model file '{path}' does not define class TritonPythonModel")
    return cls


def run_auto_complete(
    path: Path, label: str, config_json: str, *, as_triton: bool = False
) -> str | None:
    """Run the model's static ``auto_complete_config`` on a throwaway copy of ``model.py``.

    Returns the completed config as JSON, or None when the model has no such method.

    :raises ModelLoadError: when ``model.py`` fails to import or the method fails.
    """
    module = load_model_module(path, f"{label}_autocomplete", as_triton=as_triton)
    try:
        method = getattr(_model_class(module, path), "auto_complete_config", None)
        if method is None:
            return None
        config = pb_utils.ModelConfig(config_json)
        try:
            result = method(config)
        except Exception as exc:
            raise ModelLoadError(
                f"auto_complete_config of model '{label}' failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, pb_utils.ModelConfig):
            raise ModelLoadError(
                f"auto_complete_config function in model '{label}' must return a valid"
                " pb_utils.ModelConfig object."
            )
        return json.dumps(result.as_dict())
    finally:
        unload_model_module(module)


class ModelRunner:
    """One instance's ``TritonPythonModel`` object and the calls into it."""

    __slots__ = (
        "as_triton",
        "decoupled",
        "execute",
        "instance_name",
        "is_async",
        "model",
        "module",
        "path",
    )

    def __init__(
        self, path: Path, instance_name: str, decoupled: bool, *, as_triton: bool = False
    ) -> None:
        self.path = path
        self.as_triton = as_triton
        self.instance_name = instance_name
        self.decoupled = decoupled
        self.module: ModuleType | None = None
        self.model: Any = None
        self.execute: Any = None
        self.is_async = False

    def load(self) -> None:
        """Import this instance's copy of ``model.py`` and make its ``TritonPythonModel``.

        :raises ModelLoadError: on a missing file, an import error, or a model without
            ``execute``.
        """
        self.module = load_model_module(self.path, self.instance_name, as_triton=self.as_triton)
        try:
            self.model = _model_class(self.module, self.path)()
            execute = getattr(self.model, "execute", None)
            if execute is None:
                raise ModelLoadError(
                    f"Python model '{self.path}' does not implement `execute` method."
                )
        except BaseException:
            self.close()
            raise
        self.execute = execute
        self.is_async = inspect.iscoroutinefunction(execute)

    def initialize(self, args: dict[str, str]) -> object:
        """Call ``initialize(args)`` if the model has it; returns what it returned."""
        method = getattr(self.model, "initialize", None)
        return None if method is None else method(args)

    def finalize(self) -> object:
        """Call ``finalize()`` if the model has it; returns what it returned."""
        method = getattr(self.model, "finalize", None)
        return None if method is None else method()

    def close(self) -> None:
        """Drop the model object and its module."""
        self.model = None
        self.execute = None
        if self.module is not None:
            unload_model_module(self.module)
            self.module = None

    def failure(self, text: str) -> str:
        """Triton's wording for a batch that failed with ``text``."""
        return f"Failed to process the request(s) for model '{self.instance_name}', message: {text}"

    def raised(self, exc: BaseException) -> ExecuteError:
        """The error answered to every request of a batch whose ``execute`` raised ``exc``."""
        return ExecuteError(self.failure(f"{type(exc).__name__}: {exc}"))

    def check(
        self, requests: Sequence[object], result: object
    ) -> Sequence[pb_utils.InferenceResponse | None] | None:
        """What ``execute`` returned, checked against Triton's rules.

        Returns the responses in request order (None entries: that request is answered
        otherwise), or None when ``execute`` returned None (answers went through senders).

        :raises ExecuteError: for a decoupled model returning responses, a result that is not
            a list of ``InferenceResponse``, or one of the wrong length.
        """
        if result is None:
            return None
        if self.decoupled:
            raise ExecuteError(
                self.failure(
                    f"Python model '{self.instance_name}' is using the decoupled mode and the"
                    " execute function must return None."
                )
            )
        if not isinstance(result, list | tuple):
            raise ExecuteError(
                self.failure(f"Expected a list in the execute return, found type '{type(result)}'.")
            )
        if len(result) != len(requests):
            raise ExecuteError(
                self.failure(
                    "Number of InferenceResponse objects do not match the number of"
                    f" InferenceRequest objects. InferenceRequest(s) size is:{len(requests)},"
                    f" and InferenceResponse(s) size is:{len(result)}"
                )
            )
        response_type = pb_utils.InferenceResponse
        for request, response in zip(requests, result, strict=True):
            if response is None:
                continue
            if getattr(request, "_release_flags", 1) == _RESCHEDULE:
                raise ExecuteError(
                    self.failure(
                        "Expected a None object in the execute function return list for"
                        f" reschduled request, found type '{type(response)}'."
                    )
                )
            if type(response) is not response_type and not isinstance(response, response_type):
                raise ExecuteError(
                    self.failure(
                        "Expected an 'InferenceResponse' object in the execute function"
                        f" return list, found type '{type(response)}'."
                    )
                )
        return result
