"""The shape of the package, checked: no import cycles (function-level imports included), the
on-disk format at the bottom, and readers that never import a writer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "latentflow"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every latentflow module ``path`` imports, at any depth (functions, methods, TYPE_CHECKING too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a.b.c where c is a name: the module a.b
                target = target.rpartition(".")[0]
            if target.startswith("latentflow") and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, name, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_counting_function_level_imports():
    # the package __init__ resolves its public names lazily from strings, so it is no edge here
    graph = {k: {m for m in v if m != "latentflow"} for k, v in import_graph().items()}
    assert _cycles(graph) == []


def test_format_is_the_bottom_layer():
    allowed = ("latentflow.format", "latentflow.errors", "latentflow.configuration", "latentflow.normalization",
               "latentflow.version", "latentflow.media.config")
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("latentflow.format"):
            bad = sorted(d for d in deps if not d.startswith(allowed))
            assert not bad, f"{name} imports {bad}: the format layer imports no producer"
    assert graph["latentflow.media.config"] <= {"latentflow.configuration", "latentflow.errors"}


def test_readers_never_import_writers():
    for name, deps in import_graph().items():
        if name.startswith("latentflow.read"):
            assert not [d for d in deps if d.startswith(("latentflow.store", "latentflow.encode", "latentflow.jobs"))], name


def test_the_graph_sees_function_level_imports():
    # the check must not be blind to deferred imports: latentflow.cli imports its commands inside main()
    src = "def f():\n    from latentflow.format import codec\n"
    tmp = ROOT.parent / "tests" / "_arch_probe.py"
    try:
        tmp.write_text(src)
        assert _imports(tmp, "tests._arch_probe", set(_modules())) == {"latentflow.format.codec"}
    finally:
        tmp.unlink()
