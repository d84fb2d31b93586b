"""The layout's promise: imports inside tagger run one way (no module imports, even inside a
function, a module that imports it back, directly or around a circle)."""
from __future__ import annotations

import ast
from pathlib import Path

import tagger

ROOT = Path(tagger.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    def known(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else ""

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names if a.name.startswith("tagger")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tagger"):
            # "from tagger import x" imports the module tagger.x when there is one
            found |= {known(f"{node.module}.{a.name}") if f"{node.module}.{a.name}" in modules
                      else known(node.module) for a in node.names}
    return found - {""}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

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
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_finder_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_tagger_imports_itself_around_a_circle():
    modules = _modules()
    # a package's __init__ that only re-exports its modules is not a way back up
    graph = {m: {i for i in _imports(p, modules) if i != m and not m.startswith(i + ".")}
             for m, p in modules.items()}
    assert circles(graph) == []
