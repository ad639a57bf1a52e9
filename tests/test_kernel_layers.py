"""The kernel's import graph: no circles, and each module imports only its own layer or below.

The graph is read from the source (ast), so it holds for every import a module can run: at
module level and inside functions (the lazy imports that keep ``kernel --help`` light count
too). Imports under ``if TYPE_CHECKING:`` never run and are left out. docs/architecture.md shows
the same table; a new module goes into it on purpose.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import kernel

ROOT = Path(kernel.__file__).resolve().parent

# From the bottom: a module may import modules of its own layer and of earlier layers in this
# list, never of a later one. Generated code (kernel._proto.*) counts as one module.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "errors, tensors, config, settings",
        (
            "kernel",
            "kernel._errors",
            "kernel.tensors",
            "kernel.config",
            "kernel._proto",
            "kernel._config_text",
            "kernel.signature",
            "kernel._options",
            "kernel._trace_settings",
            "kernel._log_settings",
            "kernel._log_output",
            "kernel._statistics",
            "kernel._latency",
            "kernel._devices",
            "kernel._malloc",
            "kernel._hooks",
        ),
    ),
    (
        "contract",
        (
            "kernel._backend",
            "kernel._inference",
            "kernel.batching",
            "kernel._frontend_plugins",
            "kernel._instance_thread",
            "kernel._validation",
        ),
    ),
    (
        "repository, registry",
        (
            "kernel._discovery",
            "kernel._registry",
            "kernel._repository",
            "kernel._unhonoured",
        ),
    ),
    ("scheduling", ("kernel._scheduling", "kernel._scheduling.*")),
    (
        "models, manager",
        (
            "kernel._admissions",
            "kernel._instance_worker",
            "kernel._warmup",
            "kernel._response_cache",
            "kernel._models",
            "kernel._inference_target",
            "kernel._manager",
        ),
    ),
    (
        "server",
        (
            "kernel._otel",
            "kernel._tracing",
            "kernel._shared_memory",
            "kernel._server",
        ),
    ),
    ("frontends", ("kernel.frontends", "kernel.frontends.*")),
    (
        "cli",
        (
            "kernel.__main__",
            "kernel._cli",
            "kernel._ignored_flags",
            "kernel._backends_command",
            "kernel._check_command",
            "kernel._serve_command",
        ),
    ),
    ("testing", ("kernel.testing", "kernel.testing.*")),
]


def _module_name(path: Path) -> str:
    parts = ["kernel", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    if parts[1:2] == ["_proto"]:
        return "kernel._proto"
    return ".".join(parts)


def _modules() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        found.setdefault(_module_name(path), []).append(path)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(path: Path, name: str, modules: set[str]) -> set[str]:
    """The kernel modules ``path`` (module ``name``) imports at run time."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    raw: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_node(other)
            else:
                visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            raw.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from kernel import _log_output`` imports a module; ``from x import name``
                # imports x.
                submodule = f"{source}.{alias.name}"
                raw.add(submodule if submodule in modules else source)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    edges = set()
    for target in raw:
        if target != "kernel" and not target.startswith("kernel."):
            continue
        if target.startswith("kernel._proto"):
            target = "kernel._proto"
        while target not in modules and "." in target:
            target = target.rpartition(".")[0]
        if target != name:
            edges.add(target)
    return edges


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    graph: dict[str, set[str]] = {}
    for name, paths in modules.items():
        if name == "kernel._proto":
            graph[name] = set()  # generated code imports only itself
            continue
        graph[name] = set().union(*(_imported(path, name, names) for path in paths))
    return graph


def _layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (
                member.endswith(".*") and module.startswith(member.removesuffix("*"))
            ):
                return index
    return None


def test_every_kernel_module_has_a_layer() -> None:
    missing = sorted(module for module in _graph() if _layer_of(module) is None)
    assert not missing, f"put these modules into a layer of LAYERS: {missing}"


def test_modules_import_only_their_layer_or_below() -> None:
    upward = []
    for module, imports in sorted(_graph().items()):
        layer = _layer_of(module)
        for target in sorted(imports):
            target_layer = _layer_of(target)
            if layer is not None and target_layer is not None and target_layer > layer:
                upward.append(
                    f"{module} ({LAYERS[layer][0]}) imports {target} ({LAYERS[target_layer][0]})"
                )
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    """The reader itself: a function-level import is an edge, a TYPE_CHECKING one is not."""
    graph = _graph()
    assert "kernel._serve_command" in graph["kernel._cli"]  # imported inside main()
    assert "kernel._frontend_plugins" not in graph["kernel._options"]  # TYPE_CHECKING only
    assert "kernel._options" in graph["kernel._server"]


def test_docs_architecture_shows_the_same_layers() -> None:
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    table = re.search(r"<!-- layers:.*?-->\n(.*?)<!-- /layers -->", text, re.S)
    assert table is not None, "docs/architecture.md lost its <!-- layers --> table"
    rows = [line for line in table.group(1).splitlines() if line.startswith("| ")][1:]
    shown = []
    for row in rows:
        layer, modules = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`([\w.*]+)`", modules)
        shown.append((layer, [n if n == "kernel" else f"kernel.{n}" for n in names]))
    assert shown == [(layer, list(members)) for layer, members in LAYERS]


def test_kernel_modules_import_from_where_names_are_defined() -> None:
    """Not through the lazy facades (``kernel``, ``kernel.frontends``): an import through one
    hides the real edge from this graph, and loads the facade's map on the way."""
    modules = set(_modules())
    through = []
    for path in sorted(ROOT.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in ("kernel", "kernel.frontends"):
                through.extend(
                    f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name != "__version__"
                    and f"{node.module}.{alias.name}" not in modules  # a submodule is fine
                )
    assert not through, through


def _declared_all(path: Path) -> list[str] | None:
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return None


def test_what_a_module_offers_the_others_is_in_its_all() -> None:
    """A private module's ``__all__`` says what the rest of the kernel takes from it: every
    name another kernel module imports from it is listed (its other names are its own)."""
    modules = _modules()
    declared = {
        name: _declared_all(paths[0]) for name, paths in modules.items() if name != "kernel._proto"
    }
    unlisted = []
    for path in sorted(ROOT.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            offered = declared.get(node.module)
            if offered is None:
                continue
            unlisted.extend(
                f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                for alias in node.names
                if alias.name not in offered and f"{node.module}.{alias.name}" not in modules
            )
    assert not unlisted, "\n".join(unlisted)
