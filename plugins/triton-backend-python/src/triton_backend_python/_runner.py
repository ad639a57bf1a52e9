"""One model instance's own copy of ``model.py``, and Triton's rules for what its hooks return.

Every instance imports ``model.py`` under a module name of its own, so module globals never
leak between instances (Triton gets the same from one process per instance). As in Triton, the
version folder and the model folder are put on ``sys.path`` and ``model.py`` is imported as a
module of a package, so it can import the modules next to it, relatively or not.
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
import traceback
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


def _own_package(folder: Path, label: str) -> str:
    """A package of its own over ``folder``, named for this load only, so the file imported
    from it can import the files beside it relatively (``from .helpers import x``) without
    sharing them with another load, and without shadowing an installed package named like
    the folder (a backend folder ``vllm`` whose ``model.py`` imports ``vllm``)."""
    name = f"_triton_model_{re.sub(r'[^0-9a-zA-Z_]', '_', label)}_{next(_module_numbers)}"
    package = ModuleType(name)
    package.__path__ = [str(folder)]
    package.__package__ = name
    sys.modules[name] = package
    return name


# What each loaded module put on sys.path and in sys.modules, released when it is unloaded.
_loads: dict[str, tuple[list[str], str | None]] = {}


def _traceback_summary(exc: BaseException, path: Path) -> str:
    """The frames of a failed import that are not the import system's, one line:
    ``model.py:3 in <module> -> helpers.py:1 in <module>`` (full paths)."""
    frames = [
        f"{frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen") and frame.filename != __file__
    ]
    return " -> ".join(frames[-6:]) if frames else str(path)


def load_model_module(path: Path, label: str, *, as_triton: bool = False) -> ModuleType:
    """Import ``path`` as a new module named after ``label`` (never shared with another load).

    The file is imported as a module of a package over its folder, with the folder on
    ``sys.path`` (and, for a version folder, the model folder after it, as Triton's stub), so
    both ``import helpers`` and ``from .helpers import x`` find the files beside it.
    ``as_triton`` (a model process holds one model) with a model's own version folder: the
    package is the version folder as Triton's stub names it (``__name__ == "1.model"``).
    Elsewhere (in-process instances, one copy each; a Python-based backend's file in a
    backend folder) the package is one of its own.

    :raises ModelLoadError: when the file is missing or raises on import (the message names
        the file and summarizes the traceback).
    """
    if not path.is_file():
        raise ModelLoadError(f"Python model file not found in '{path}'")
    folder = path.parent
    version_folder = folder.name.isdigit()
    own: str | None = None
    if as_triton and version_folder:
        package = _triton_package(folder)
    else:
        package = own = _own_package(folder, label)
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import Python model file '{path}'")
    module = importlib.util.module_from_spec(spec)
    folders = [str(folder), *([str(folder.parent)] if version_folder else [])]
    sys.modules[name] = module  # dataclasses, pickle and typing resolve a module by name
    for entry in folders:
        _use_path(entry)
    _loads[name] = (folders, own)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        _forget(name)
        raise ModelLoadError(
            f"failed to import Python model file '{path}': {type(exc).__name__}: {exc}"
            f" (traceback: {_traceback_summary(exc, path)})"
        ) from exc
    return module


def _forget(name: str) -> None:
    folders, own = _loads.pop(name, ([], None))
    sys.modules.pop(name, None)
    if own is not None:  # the package and every module imported through it
        prefix = own + "."
        # list() copies atomically: other instances may be importing in other threads
        for key in [k for k in list(sys.modules) if k == own or k.startswith(prefix)]:
            sys.modules.pop(key, None)
    for entry in folders:
        _release_path(entry)


def unload_model_module(module: ModuleType) -> None:
    """Forget a module :func:`load_model_module` made (its objects live while referenced)."""
    _forget(module.__name__)


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
