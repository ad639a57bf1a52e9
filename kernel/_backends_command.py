"""``kernel backends`` and ``kernel frontends``: the backends a server would find and the installed
frontends, read from package metadata and files.

Three kinds, each with where it was found: installed plugins and Python-based backends
(``kernel.backends`` entry points; which of the two an entry point declares is read from its
source), Python-based backends of ``--backend-directory`` (``DIR/<name>/model.py``), and, with
``--model-repository``, models whose ``runtime`` is a Python file of their own folders.
Importing a backend imports its framework (seconds for torch or OpenVINO), so the listing does
not, unless asked with ``--import``: then each backend is imported and its attributes, or the
reason it fails to import, are shown. Only the standard library is imported at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kernel._discovery import (
    PROJECT_DISTRIBUTIONS,
    PYTHON_BACKEND,
    directory_backends,
    entry_point_kind,
    find_runtime_file,
    installed_backends,
)

__all__ = ["format_table", "list_backends", "list_frontends"]


def format_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A tritonserver-style ``+---+`` table."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: tuple[str, ...]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def _described(name: str, value: str) -> str:
    from importlib.metadata import EntryPoint

    try:
        cls = EntryPoint(name=name, value=value, group="").load()
    except Exception as exc:
        return f"fails to import: {type(exc).__name__}: {exc}"
    attributes = getattr(cls, "attributes", None)
    if attributes is None:
        return "not a kernel.Backend"
    text = f"parallel_instance_loading={attributes.parallel_instance_loading}"
    preferred = getattr(attributes, "preferred_instance_kind", "")
    return f"{text} preferred_instance_kind={preferred}" if preferred else text


def _kind(value: str, distribution: str) -> str:
    kind = entry_point_kind(value)
    if kind == "python":
        return "python-based"
    if kind == "plugin" or distribution in PROJECT_DISTRIBUTIONS.values():
        return "plugin"
    return "entry point (--import tells)"


def _imported_kind(name: str, value: str) -> tuple[str, str]:
    """(kind, attributes or the import failure) of an entry point, importing it."""
    from importlib.metadata import EntryPoint

    try:
        cls = EntryPoint(name=name, value=value, group="").load()
    except Exception as exc:
        return "?", f"fails to import: {type(exc).__name__}: {exc}"
    if (
        getattr(cls, "attributes", None) is None
        and isinstance(cls, type)
        and hasattr(cls, "execute")
    ):
        return "python-based", f"TritonPythonModel, served by the '{PYTHON_BACKEND}' backend"
    return "plugin", _described(name, value)


def _model_runtimes(
    repositories: Sequence[Path], directories: Sequence[Path]
) -> list[tuple[str, ...]]:
    """A row per model whose ``runtime`` is a Python file found in its own folders (a
    Python-based backend of that model only)."""
    from kernel._repository import ModelRepository

    rows: list[tuple[str, ...]] = []
    repository = ModelRepository(list(repositories))
    found, _ = repository.scan()
    for name in sorted(found):
        try:
            source = repository.read(name)
        except Exception:
            continue  # kernel check reports it
        runtime = str(source.config.runtime or "")
        if not runtime.endswith(".py"):
            continue
        backend = str(source.config.backend or PYTHON_BACKEND)
        versions = sorted(
            (int(p.name) for p in source.model_dir.iterdir() if p.name.isdigit()), reverse=True
        )
        located = find_runtime_file(
            runtime,
            version_dir=source.model_dir / str(versions[0] if versions else 1),
            model_dir=source.model_dir,
            backend=backend,
            directories=directories,
        )
        if located.path is None:
            where = f"not found (looked for {', '.join(str(p) for p in located.searched)})"
        else:
            where = str(located.path)
        rows.append((backend, f"python-based (model '{name}')", "-", "-", where))
    return rows


def list_backends(
    *,
    load: bool = False,
    backend_directories: Sequence[Path] = (),
    repositories: Sequence[Path] = (),
) -> int:
    """Print the backends a server here would find (with ``load``, import each installed one):
    installed plugins and Python-based backends (entry points), Python-based backends of the
    backend directories (``DIR/<name>/model.py``) and of models' own folders (``runtime``);
    returns the exit status."""
    installed = sorted(installed_backends().items())
    directory = directory_backends(backend_directories)
    rows: list[tuple[str, ...]] = []
    for name, info in installed:
        kind, where = (
            _imported_kind(name, info.value)
            if load
            else (_kind(info.value, info.distribution), info.value)
        )
        if load:
            where = f"{info.value}: {where}"
        rows.append((name, kind, info.distribution, info.version, where))
    names = {name for name, _ in installed}
    for name, found in sorted(directory.items()):
        shadowed = " (an installed backend of that name wins)" if name in names else ""
        rows.append((name, "python-based (backend directory)", "-", "-", f"{found.path}{shadowed}"))
    if repositories:
        rows.extend(_model_runtimes(repositories, backend_directories))
    if not rows:
        print("no backends installed (pip install triton-backend-onnx, for one)")
        return 0
    print(format_table(("Backend", "Kind", "Distribution", "Version", "Where"), rows))
    if not load:
        print("(kernel backends --import imports each backend to check it and show its attributes)")
    return 0


def list_frontends() -> int:
    """Print the installed frontends; returns the exit status.

    Each plugin object is loaded for its default port and description (frontend plugin
    modules are light by contract: the server stack is imported by ``create``).
    """
    from kernel._frontend_plugins import installed_frontends, load_frontend_plugins

    installed = installed_frontends()
    plugins, failed = load_frontend_plugins()
    rows = []
    for name, info in installed.items():
        plugin = plugins.get(name)
        if plugin is None:
            port, text = "-", f"fails to load: {failed.get(name, '?')}"
        else:
            port = "off" if plugin.default_port is None else str(plugin.default_port)
            text = plugin.description
        rows.append((name, info.distribution, port, text))
    print(format_table(("Frontend", "Distribution", "Default port", "Description"), rows))
    return 0
