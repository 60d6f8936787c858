"""The import graph of ``compress/`` and ``converters/``, and a check that it has no circle.

    python -m tools.imports            # a summary; exit 1 printing every circle (or unknown module)
    python -m tools.imports --edges    # also every edge: importer -> imported  (file:line)

Every module under the roots is parsed with :mod:`ast` (nothing is imported or run). An edge goes from a
module to each module of the roots it imports, wherever the import statement is: at module level, inside
a function (a lazy import is still a dependency: the circle closes when the function runs) or under
``if TYPE_CHECKING``. ``import a.b`` and ``from a.b import c`` are edges to ``a.b``, unless ``c`` is a
submodule (``a/b/c.py`` or ``a/b/c/``): then to ``a.b.c``. Relative imports are resolved against the
importing module. Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``; those implicit
imports are not edges (a package's ``__init__`` is a module with its own edges like any other). Imports
by computed name (``importlib.import_module(f"...")``: the CLI's lazy commands) are not seen.

A *circle* is a strongly connected set of modules; for each, the shortest circle through each of its
modules is printed with the file and line of every import on it. An import of a module under a root
that does not exist (a stale path after a move) is an error too, in the roots and in the code that uses
them (``tools/``, ``tests/``, ``bench/``: ``USERS``).
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("compress", "converters")
USERS = ("tools", "tests", "bench")  # checked for imports of modules of ROOTS that do not exist


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    line: int
    lazy: bool  # inside a function (or class body), not at module level

    def where(self, modules: dict[str, Path], root: Path = ROOT) -> str:
        return f"{modules[self.source].relative_to(root)}:{self.line}"


def find_modules(root: Path = ROOT, roots: tuple[str, ...] = ROOTS) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under ``roots`` (packages: ``__init__.py``)."""
    modules = {}
    for top in roots:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _absolute(module: str, level: int, name: str | None, modules: dict[str, Path]) -> str:
    """The absolute module a (possibly relative) ``from`` names."""
    if not level:
        return name or ""
    base = module.split(".") if _is_package(module, modules) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def _inside(name: str, roots: tuple[str, ...]) -> bool:
    return name.split(".")[0] in roots


def module_edges(module: str, path: Path, modules: dict[str, Path], roots: tuple[str, ...] = ROOTS,
                 root: Path = ROOT) -> tuple[list[Edge], list[str]]:
    """The edges out of ``module`` and the imports of ``roots`` modules that do not exist (``file:line
    name``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    edges: list[Edge] = []
    unknown: list[str] = []
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # module level, also inside if/try blocks at module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
                          and not _under_def(node, n)}

    def add(target: str, node: ast.stmt) -> None:
        if not _inside(target, roots):
            return
        if target not in modules:
            unknown.append(f"{path.relative_to(root)}:{node.lineno} {target}")
            return
        edge = Edge(module, target, node.lineno, id(node) not in top_level)
        if target != module and edge not in edges:  # one edge per statement and target
            edges.append(edge)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.level, node.module, modules)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if alias.name != "*" and sub in modules:
                    add(sub, node)
                else:
                    add(base, node)
    return edges, unknown


def _under_def(block: ast.AST, target: ast.AST) -> bool:
    """Whether ``target`` sits inside a function or class defined within ``block``."""
    for n in ast.walk(block):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not block:
            if any(m is target for m in ast.walk(n)):
                return True
    return False


def import_graph(root: Path = ROOT, roots: tuple[str, ...] = ROOTS, users: tuple[str, ...] = USERS,
                 ) -> tuple[dict[str, Path], list[Edge], list[str]]:
    """Modules, edges (one per importing statement and target) and unknown imports (of the roots' modules,
    from the roots and from ``users``)."""
    modules = find_modules(root, roots)
    edges: list[Edge] = []
    unknown: list[str] = []
    for name, path in modules.items():
        e, u = module_edges(name, path, modules, roots, root)
        edges += e
        unknown += u
    used = {**find_modules(root, tuple(u for u in users if (root / u).is_dir())), **modules}
    for name, path in used.items():
        if name not in modules:
            unknown += module_edges(name, path, used, roots, root)[1]
    return modules, edges, unknown


def strongly_connected(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(succ.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ.get(w, ()))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
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


def shortest_circle(start: str, succ: dict[str, list[str]], within: set[str]) -> list[str]:
    """The shortest path ``start -> ... -> start`` inside ``within`` (breadth first)."""
    prev: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        v = queue.popleft()
        for w in succ.get(v, ()):
            if w not in within:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in seen:
                seen.add(w)
                prev[w] = v
                queue.append(w)
    return []


def circles(modules: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """Every distinct shortest circle through each module of each strongly connected set."""
    succ: dict[str, list[str]] = {}
    for e in edges:
        if e.target not in succ.setdefault(e.source, []):
            succ[e.source].append(e.target)
    found: list[list[str]] = []
    keys: set[tuple[str, ...]] = set()
    for comp in strongly_connected(sorted(modules), succ):
        for m in comp:
            c = shortest_circle(m, succ, set(comp))
            i = c.index(min(c[:-1]))
            key = tuple(c[i:-1] + c[:i])  # the same circle from another module
            if c and key not in keys:
                keys.add(key)
                found.append([*key, key[0]])
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.imports", description=__doc__.split("\n\n")[0])
    p.add_argument("--edges", action="store_true", help="print every edge (importer -> imported, file:line)")
    args = p.parse_args(argv)
    modules, edges, unknown = import_graph()
    pairs = {(e.source, e.target) for e in edges}
    lazy = {(e.source, e.target) for e in edges} - {(e.source, e.target) for e in edges if not e.lazy}
    if args.edges:
        for e in sorted(edges, key=lambda e: (e.source, e.target, e.line)):
            print(f"{e.source} -> {e.target}  ({e.where(modules)}{', lazy' if e.lazy else ''})")
    found = circles(modules, edges)
    print(f"{len(modules)} modules, {len(pairs)} edges ({len(lazy)} only through function-level imports), "
          f"{len(found)} circle{'s' if len(found) != 1 else ''}")
    first = {}
    for e in sorted(edges, key=lambda e: e.line):
        first.setdefault((e.source, e.target), e)
    for c in found:
        print("circle: " + " -> ".join(c))
        for a, b in zip(c[:-1], c[1:], strict=True):
            e = first[(a, b)]
            print(f"    {a} -> {b}  ({e.where(modules)}{', lazy' if e.lazy else ''})")
    for u in unknown:
        print(f"unknown module: {u}")
    return 1 if found or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
