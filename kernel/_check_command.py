"""``kernel check``: parse and validate every model of a repository without serving it.

Nothing is loaded and no backend imported: each model's backend is looked up the way the
registry would resolve it, from package metadata and backend directories.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kernel._discovery import (
    BackendInfo,
    directory_backends,
    find_runtime_file,
    runtime_backend_name,
)
from kernel._errors import KernelError
from kernel._registry import BackendRegistry
from kernel._repository import (
    ModelRepository,
    ModelSource,
    backend_name,
    normalize_config,
    select_versions,
)
from kernel._unhonoured import unhonoured_fields

__all__ = ["check"]


def _backend_problem(
    source: ModelSource, backend: str, installed: dict[str, BackendInfo], directories: list[Path]
) -> str | None:
    """Why the backend a model names would not be found (as the registry resolves it), or
    None; nothing is imported."""
    runtime = str(source.config.runtime or "")
    if runtime.endswith(".py"):
        versions = sorted(int(p.name) for p in source.model_dir.iterdir() if p.name.isdigit())
        for number in versions or [1]:
            found = find_runtime_file(
                runtime,
                version_dir=source.model_dir / str(number),
                model_dir=source.model_dir,
                backend=backend,
                directories=directories,
            )
            if found.path is None:
                looked = ", ".join(f"'{p}'" for p in found.searched)
                return f"runtime '{runtime}' names no Python file; looked for {looked}"
        return None
    name = runtime_backend_name(runtime) if runtime else backend
    if name in installed or name in directory_backends(directories):
        return None
    return BackendRegistry.missing_backend_message(name, installed)


def check(repositories: list[Path], backend_directories: list[Path] | None = None) -> int:
    """``kernel check``: parse and validate every model; print each problem; 1 if any."""
    problems: list[str] = []
    warnings: list[str] = []
    repository = ModelRepository(repositories)
    try:
        found, duplicates = repository.scan()
    except KernelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    problems.extend(f"{name}: {reason}" for name, reason in duplicates.items())
    installed = BackendRegistry.installed()
    checked = 0
    for name in sorted(found):
        if name in duplicates:
            continue
        checked += 1
        try:
            source = repository.read(name)
            normalize_config(source.config, source.config_path, gpus=0)
            backend = backend_name(source.config, source.config_path)
            for item in unhonoured_fields(source.config):
                if item.severity == "error":
                    problems.append(f"{name}: {source.config_path}: {item}")
                else:
                    warnings.append(f"{name}: {source.config_path}: {item}")
            problem = (
                None
                if backend == "ensemble"
                else _backend_problem(source, backend, installed, backend_directories or [])
            )
            if problem is not None:
                problems.append(f"{name}: {problem}")
            select_versions(source)
        except KernelError as exc:
            problems.append(f"{name}: {exc.message}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"checked {checked} models: {len(problems)} problem(s), {len(warnings)} warning(s)")
    return 1 if problems else 0
