"""The package's import graph (module-level and lazy imports alike) has no circle: data flows one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
KNOWN: list[set[str]] = []  # circles tolerated for now (none)


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for f in (SRC / "gammalens").rglob("*.py"):
        name = ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = f

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gammalens"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("gammalens")]
            graph[m] |= {t for t in map(resolve, targets) if t and t != m}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_circle() -> None:
    graph = import_graph()
    assert "gammalens.publish" in graph["gammalens"]  # a function-local import (the facade's) is counted
    assert [c for c in circles(graph) if c not in KNOWN] == []


# --- the package tree as the data flow (docs/architecture.md) ------------------------------------------------

PKG = SRC / "gammalens"
LOOSE_ALLOWED = {"__init__", "__main__", "errors", "version"}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gammalens"


def test_no_package_level_circle() -> None:
    graph: dict[str, set[str]] = {}
    for m, targets in import_graph().items():
        graph.setdefault(package_of(m), set()).update(package_of(t) for t in targets)
    graph = {p: {t for t in ts if t != p and t not in ("errors", "version")} for p, ts in graph.items()}
    graph.pop("gammalens", None)  # the root facade composes everything; nothing imports it
    for ts in graph.values():
        ts.discard("gammalens")
        ts &= set(graph)
    assert circles(graph) == []


def _module_trees() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for f in PKG.rglob("*.py"):
        out[".".join(f.relative_to(SRC).with_suffix("").parts)] = (f, ast.parse(f.read_text(encoding="utf-8")))
    return out


def _function_nodes(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_at_most_two_loose_root_modules() -> None:
    loose = {f.stem for f in PKG.glob("*.py")} - LOOSE_ALLOWED
    assert len(loose) <= 2, loose


def test_no_private_name_crosses_a_module() -> None:
    crossing = []
    for m, (_, tree) in _module_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gammalens"):
                crossing += [f"{m} ← {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert crossing == []


def test_no_function_over_100_lines() -> None:
    long = [f"{m}.{fn.name}: {fn.end_lineno - fn.lineno + 1}" for m, (_, tree) in _module_trees().items()
            for fn in _function_nodes(tree) if fn.end_lineno - fn.lineno + 1 > 100]
    assert long == []


def test_function_local_gammalens_imports_are_few() -> None:
    """Outside the CLI (lazy by design: `gammalens --help` loads no torch) and __init__ files (light facades)."""
    local = []
    for m, (f, tree) in _module_trees().items():
        if m.startswith("gammalens.cli") or f.name == "__init__.py":
            continue
        for fn in _function_nodes(tree):
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gammalens")) or (
                        isinstance(node, ast.Import) and any(a.name.startswith("gammalens") for a in node.names)):
                    local.append(f"{m}:{node.lineno}")
    assert len(set(local)) <= 25, sorted(set(local))
