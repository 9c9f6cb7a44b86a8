"""coordexp's import graph, read from the source with ast (nothing is imported): no cycles, layers one way.

A cycle through module-level imports makes a module's contents depend on which module was imported
first (a name is missing from a half-initialised module). The data side is below learn: the tiny
model builder and the processors are data, learn builds segments and loads models from them; a data
module importing learn, even lazily inside a function, is the cycle this repository once had
(``data/tiny.py`` <-> ``learn/``).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import coordexp

PACKAGE_DIR = Path(coordexp.__file__).parent

# package -> packages none of its modules may import (module level or inside a function)
LAYERS = {
    "coordexp.data": ("coordexp.learn", "coordexp.backends"),
}


def _module_files() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run when the module is imported: not function bodies, not ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _import_time_nodes(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _import_time_nodes(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            yield from _import_time_nodes(handler.body)


@functools.cache
def _graph(*, lazy: bool) -> dict[str, frozenset[str]]:
    return {m: _imports(m, p, lazy=lazy) for m, p in MODULES.items()}


def _imports(name: str, path: Path, *, lazy: bool) -> frozenset[str]:
    """coordexp modules that ``name`` imports (``lazy``: function-level imports too), minus its own parents."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if lazy else _import_time_nodes(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found.update(submodules or {node.module})
    parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
    return frozenset(m for m in found if m in MODULES and m != name and m not in parents)


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles({k: frozenset(v) for k, v in graph.items()}) == [["a", "b", "c"]]
    assert _cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_no_import_cycle_among_module_level_imports():
    cycles = _cycles(_graph(lazy=False))
    assert not cycles, f"module-level import cycles: {cycles}"


def test_lower_layers_never_import_upper_ones():
    offenders = sorted(
        f"{m} imports {i}"
        for m, imported in _graph(lazy=True).items()
        for layer, banned in LAYERS.items()
        if m == layer or m.startswith(layer + ".")
        for i in imported
        if any(i == b or i.startswith(b + ".") for b in banned)
    )
    assert not offenders, f"the dependency runs learn -> data only; move these: {offenders}"


def test_importing_the_data_side_loads_no_learn_module():
    """The module-level import closure of every data module stays out of learn and backends."""
    graph = _graph(lazy=False)
    for layer, banned in LAYERS.items():
        todo = [m for m in MODULES if m == layer or m.startswith(layer + ".")]
        reached = set(todo)
        while todo:
            for w in graph[todo.pop()] - reached:
                reached.add(w)
                todo.append(w)
        bad = sorted(m for m in reached if any(m == b or m.startswith(b + ".") for b in banned))
        assert not bad, f"importing {layer} loads {bad}"
