"""The kernel's public surface is written once (``kernel.PUBLIC_MODULES``), the plugin guide
names the same modules, and no plugin, example or plugin test imports anything else.

Plugins are the kernel's first users: what they need is made public on purpose (with a name and
a docstring), never reached for under a ``_`` name. The import walk reads the source (ast), so
imports inside functions count too.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import kernel

REPO = Path(__file__).resolve().parent.parent

# Every plugin's source and tests, the documented examples and the kernel's own test plugins.
PLUGIN_TREES = [
    *sorted(REPO.glob("plugins/*/src")),
    *sorted(REPO.glob("plugins/*/tests")),
    *sorted(REPO.glob("docs/example-*")),
    *sorted(p for p in REPO.glob("tests/plugins/*") if p.is_dir()),
]

_DOC_LIST = re.compile(r"<!-- public-modules:.*?-->\n(.*?)<!-- /public-modules -->", re.S)
_DOC_ITEM = re.compile(r"^- `([\w.]+)`", re.M)


def test_the_plugin_guide_names_the_public_modules() -> None:
    text = (REPO / "docs" / "plugin-authoring.md").read_text()
    listed = _DOC_LIST.search(text)
    assert listed is not None, "docs/plugin-authoring.md lost its <!-- public-modules --> list"
    assert _DOC_ITEM.findall(listed.group(1)) == list(kernel.PUBLIC_MODULES)


@pytest.mark.parametrize("name", kernel.PUBLIC_MODULES)
def test_each_public_module_declares_what_it_exports(name: str) -> None:
    """``__all__`` is accurate: every name in it exists and is public, and every class and
    function the module defines without a ``_`` is in it."""
    module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert exported is not None, f"{name} has no __all__"
    for export in exported:
        assert hasattr(module, export), f"{name}.__all__ names {export}, which it lacks"
        assert export == "__version__" or not export.startswith("_"), f"{name}: {export}"
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    defined = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
    ]
    assert [d for d in defined if d not in exported] == [], f"{name} defines unexported names"


def test_public_modules_have_no_private_path() -> None:
    for name in kernel.PUBLIC_MODULES:
        assert not any(part.startswith("_") for part in name.split(".")), name


def _kernel_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for each import of a kernel module (``name`` None for ``import
    module``), wherever it is in the file."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, node.module, alias.name) for alias in node.names)
    return [item for item in found if item[1] == "kernel" or item[1].startswith("kernel.")]


def _refusal(module: str, name: str | None) -> str | None:
    """Why this import crosses the public surface, or None."""
    if module not in kernel.PUBLIC_MODULES:
        return f"{module} is not a public module"
    if name is None or name == "*":
        return None
    if name.startswith("_") and name != "__version__":
        return f"{name} is private to {module}"
    submodule = f"{module}.{name}"
    if _is_module(submodule):  # ``from kernel import testing``
        return None if submodule in kernel.PUBLIC_MODULES else f"{submodule} is private"
    exported = importlib.import_module(module).__dict__.get("__all__", ())
    if name not in exported:
        return f"{name} is not in {module}.__all__"
    return None


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


_PRIVATE_PATH = re.compile(r"\bkernel(?:\.\w+)*\._\w+")


def _private_paths_in_strings(path: Path) -> list[tuple[int, str]]:
    """Private kernel paths written in strings: code run with ``python -c``, a monkeypatch
    target, an ``import_module`` argument. Each reaches past the surface as an import would."""
    return [
        (node.lineno, match)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for match in _PRIVATE_PATH.findall(node.value)
    ]


def test_plugins_import_only_the_public_surface() -> None:
    assert len(PLUGIN_TREES) >= 10, PLUGIN_TREES  # the walk sees the plugins at all
    crossings = []
    for tree in PLUGIN_TREES:
        for path in sorted(tree.rglob("*.py")):
            for line, module, name in _kernel_imports(path):
                why = _refusal(module, name)
                if why is not None:
                    crossings.append(f"{path.relative_to(REPO)}:{line}: {why}")
            for line, private in _private_paths_in_strings(path):
                crossings.append(f"{path.relative_to(REPO)}:{line}: '{private}' in a string")
    assert not crossings, "imports past kernel's public surface:\n" + "\n".join(crossings)


def test_private_paths_in_strings_are_found(tmp_path: Path) -> None:
    source = tmp_path / "t.py"
    source.write_text(
        'CODE = "from kernel._cli import main; main()"\n'
        'TARGET = "kernel._models.visible_gpus"\n'
        'FINE = "kernel.testing.run_server, kernel_server, kernel.config"\n'
    )
    assert [p for _, p in _private_paths_in_strings(source)] == [
        "kernel._cli",
        "kernel._models",
    ]


@pytest.mark.parametrize(
    ("module", "name", "refused"),
    [
        ("kernel", "KernelError", False),
        ("kernel", "testing", False),
        ("kernel.config", "parse_model_config", False),
        ("kernel._manager", "ModelManager", True),
        ("kernel.frontends._http", "HttpFrontend", True),
        ("kernel", "_config_text", True),
        ("kernel.tensors", "_DTYPES", True),
        ("kernel.config", "Message", True),
        ("kernel._proto.inference", None, True),
    ],
)
def test_the_rule_itself(module: str, name: str | None, refused: bool) -> None:
    assert (_refusal(module, name) is not None) is refused
