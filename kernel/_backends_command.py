"""``kernel backends`` and ``kernel frontends``: the installed plugins, from package metadata.

Importing a backend imports its framework (seconds for torch or OpenVINO), so the listing does
not, unless asked with ``--import``: then each backend is imported and its attributes, or the
reason it fails to import, are shown. Only the standard library is imported at module level.
"""

from __future__ import annotations

from collections.abc import Sequence

from kernel._discovery import installed_backends

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


def list_backends(*, load: bool = False) -> int:
    """Print the installed backends (with ``load``, import each); returns the exit status."""
    installed = sorted(installed_backends().items())
    if not installed:
        print("no backends installed (pip install triton-backend-onnx, for one)")
        return 0
    if load:
        rows = [
            (name, info.distribution, info.version, _described(name, info.value))
            for name, info in installed
        ]
        print(format_table(("Backend", "Distribution", "Version", "Attributes"), rows))
        return 0
    rows = [(name, info.distribution, info.version, info.value) for name, info in installed]
    print(format_table(("Backend", "Distribution", "Version", "Entry point"), rows))
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
