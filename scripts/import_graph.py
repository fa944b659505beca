"""The import graph inside the ``geot2e`` package: which module imports which, its cycles,
and imports of another layer's private names.

Reads the source with :mod:`ast` (nothing is imported). Every ``import`` counts, also those
inside functions (a lazy import still ties the two modules together); ``--top-level``
counts only the imports that run when the module is imported. A cycle is a strongly
connected set of modules (each reaches every other).

Usage::

    python scripts/import_graph.py              # cycles and private imports; exit 1 if any
    python scripts/import_graph.py --edges      # also every edge
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "geot2e"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(root: Path = ROOT, *, top_level: bool = False) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """``({module: {imported modules of the package}}, [(module, "imported.module:_private"), ...])``."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[tuple[str, str]] = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if top_level else ast.walk(tree)
        is_pkg = path.name == "__init__.py"
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                targets = []
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append((sub, None) if sub in modules else (base, a.name))
            else:
                continue
            for target, name in targets:
                while target and target not in modules:  # "geot2e.io.cog.x" -> "geot2e.io.cog"
                    target = target.rpartition(".")[0]
                if not target or not target.startswith(PACKAGE) or target == mod:
                    continue
                graph[mod].add(target)
                if name and name.startswith("_") and not name.startswith("__") and _layer(target) != _layer(mod):
                    private.append((mod, f"{target}:{name}"))
    for folder in ("scripts", "benchmarks", "examples"):  # users of the package: no private names either
        for f in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else []:
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
                    private += [(str(f.relative_to(root)), f"{node.module}:{a.name}") for a in node.names
                                if a.name.startswith("_") and not a.name.startswith("__")]
    return graph, private


def _layer(mod: str) -> str:
    """The layer a module belongs to: its subpackage (``geot2e.io``), or the module itself at the top."""
    parts = mod.split(".")
    return ".".join(parts[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _is_package_edge(a: str, b: str) -> bool:
    """A package's ``__init__`` importing its own submodules (and they importing siblings
    through it) is how a package exposes its names, not a cycle between layers."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def layer_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles once the edges between a package and its own submodules are left out."""
    g = {a: {b for b in bs if not _is_package_edge(a, b)} for a, bs in graph.items()}
    return cycles(g)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", action="store_true", help="print every edge")
    ap.add_argument("--top-level", action="store_true", help="only imports that run at import time")
    a = ap.parse_args(argv)
    graph, private = imports(top_level=a.top_level)
    if a.edges:
        for m in sorted(graph):
            for t in sorted(graph[m]):
                print(f"{m} -> {t}")
    found = layer_cycles(graph)
    n_edges = sum(len(v) for v in graph.values())
    print(f"{len(graph)} modules, {n_edges} imports inside {PACKAGE}; {len(found)} cycle(s)")
    for c in found:
        print("cycle: " + " <-> ".join(c))
    for m, name in private:
        print(f"private name across layers: {m} imports {name}")
    return 1 if found or private else 0


if __name__ == "__main__":
    sys.exit(main())
