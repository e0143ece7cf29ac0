"""The modules of logkv import each other without a cycle (imports under TYPE_CHECKING count
too), and the synchronous core (the engine, log reading, the bytes) never imports the layers
above it nor asyncio (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import logkv

PACKAGE = Path(logkv.__file__).parent


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


#: The synchronous core: the engine, log reading and the bytes layer.
SYNC_CORE = {
    f"logkv.{name}"
    for name in [
        *("engine", "compaction", "index", "key_table", "le_columns", "hints", "blocks"),
        *("key_range", "segments", "snapshot", "retire", "values", "turns"),
        *("lock", "synced", "modes", "scan", "replay", "repair", "history", "verify"),
        *("rebuild", "log_cut", "checkpoints", "group_commit", "value_refs"),
        *("format", "layout", "fsutil", "files", "errors"),
    ]
}


def import_graph(*, outside: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (``outside``: every module it names,
    the package's own and others such as ``asyncio``)."""
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if (outside or t in modules) and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            group: list[str] = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "logkv.replay" in graph["logkv.engine"]
    assert "logkv.compaction" in graph["logkv.engine"]


def test_no_import_cycle_inside_logkv() -> None:
    assert cycles(import_graph()) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_sync_core_imports_only_itself_and_no_asyncio() -> None:
    inside, named = import_graph(), import_graph(outside=True)
    assert set(inside) >= SYNC_CORE, SYNC_CORE - set(inside)
    for module in sorted(SYNC_CORE):
        upward = inside[module] - SYNC_CORE - {"logkv"}  # ``from . import x`` names the package
        assert upward == set(), f"{module} imports {sorted(upward)} from above the engine"
        assert not {t for t in named[module] if t.split(".")[0] == "asyncio"}, module


def test_the_layer_check_sees_an_upward_import() -> None:
    assert "logkv.engine" in import_graph()["logkv.storage_clients._store"]
    assert "asyncio" in import_graph(outside=True)["logkv.storage_clients._store"]
