"""The house in order: the modules of ``mirage_env`` import each other without cycles, and no two modules share a
file name (one name for one thing)."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import mirage_env

PACKAGE = Path(mirage_env.__file__).parent
SHARED_FILE_NAMES = {"__init__.py": "every package has one"}


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file below ``package`` (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements in ``nodes`` at any depth (functions included: a lazy import still ties two modules),
    except those under ``if TYPE_CHECKING:``, which never run."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif _is_type_checking(node):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (``from a.b import c`` counts as ``a.b.c`` when that is a
    module, else as ``a.b``)."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in _import_nodes([ast.parse(path.read_text(), str(path))]):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` through each group of modules that import each other in a circle."""
    cycles, done = [], set()
    for root in sorted(graph):
        path: list[str] = []
        on_path: set[str] = set()

        def visit(node: str) -> list[str] | None:
            path.append(node)
            on_path.add(node)
            for nxt in sorted(graph[node]):
                if nxt in on_path:
                    return path[path.index(nxt):] + [nxt]
                if nxt not in done:
                    found = visit(nxt)
                    if found:
                        return found
            path.pop()
            on_path.discard(node)
            done.add(node)
            return None

        if root not in done:
            cycle = visit(root)
            if cycle:
                cycles.append(cycle)
                done.update(cycle)
    return cycles


def test_no_import_cycles_between_modules():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_two_modules_share_a_file_name():
    counts = Counter(path.name for path in module_files(PACKAGE).values())
    shared = sorted(name for name, n in counts.items() if n > 1 and name not in SHARED_FILE_NAMES)
    assert not shared, f"file names used by more than one module: {shared}"


def test_cycle_finder_names_a_lazy_cycle_and_ignores_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.a import A\n")
    (package / "sub" / "a.py").write_text("from .b import B\nA = 1\n")
    (package / "sub" / "b.py").write_text("def make():\n    from pkg.sub import a\n    return a\nB = 2\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n")
    (package / "d.py").write_text("import pkg.c\n")
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.a"} and graph["pkg.sub.b"] == {"pkg.sub.a"} and graph["pkg.c"] == set()
    assert find_cycles(graph) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]]
