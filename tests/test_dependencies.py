"""pyproject.toml declares every third-party package that the code imports: the package's import-time imports are
dependencies (or the extra of an optional module), every other import is a dependency or an extra."""

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"mirage_env", "agents", "benchmarks", "tests"}
# import name (or a dotted prefix) -> distribution, where the two differ
DISTRIBUTIONS = {"PIL": "pillow", "stable_baselines3": "stable-baselines3", "imageio_ffmpeg": "imageio-ffmpeg",
                 "torch.utils.tensorboard": "tensorboard"}
# package modules that only an extra's users import: their import-time imports may come from that extra
OPTIONAL_MODULES = {"mirage_env/distributed": "distributed", "mirage_env/envs/sb3.py": "sb3"}


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(dependencies, {extra: its packages}) of pyproject.toml, as normalised distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    return {_name(r) for r in project["dependencies"]}, extras


def distribution(module: str) -> str:
    prefixes = [p for p in DISTRIBUTIONS if module == p or module.startswith(p + ".")]
    return DISTRIBUTIONS[max(prefixes, key=len)] if prefixes else module.split(".")[0].lower().replace("_", "-")


def third_party_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, distribution, at import time) of every absolute import of a third-party module in ``path``; imports
    inside functions are not at import time."""
    local = {p.stem for p in path.parent.glob("*.py")}  # scripts import their siblings (benchmarks/measure.py)
    found = []

    def visit(node: ast.AST, import_time: bool) -> None:
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for module in modules:
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in FIRST_PARTY and top not in local:
                found.append((node.lineno, distribution(module), import_time))
        inner = import_time and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return sorted(set(found))


def undeclared(folder: str, allowed_at_import: Callable[[str], set[str]], allowed_later: set[str]) -> list[str]:
    """``file:line imports NAME`` for every import in ``folder`` of a distribution outside what it may use:
    ``allowed_at_import(relative path)`` at import time, ``allowed_later`` inside functions."""
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for line, name, import_time in third_party_imports(path):
            allowed = allowed_at_import(relative) if import_time else allowed_later
            if name not in allowed:
                problems.append(f"{relative}:{line} imports {name}{' at import time' if import_time else ''}")
    return problems


def test_the_scan_sees_imports_at_import_time_and_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import os\nimport numpy as np\nfrom PIL import Image\nfrom torch.utils import tensorboard\n"
                      "try:\n    import tqdm\nexcept ImportError:\n    pass\n"
                      "def f():\n    import matplotlib.pyplot\n    from . import sibling\n")
    assert third_party_imports(source) == [(2, "numpy", True), (3, "pillow", True), (4, "tensorboard", True),
                                           (4, "torch", True), (6, "tqdm", True), (10, "matplotlib", False)]


def test_the_package_imports_only_its_dependencies_at_import_time():
    dependencies, extras = declared()

    def allowed(relative: str) -> set[str]:
        owners = [extra for prefix, extra in OPTIONAL_MODULES.items() if relative.startswith(prefix)]
        return dependencies.union(*(extras[e] for e in owners))

    assert undeclared("mirage_env", allowed, dependencies.union(*extras.values())) == []


@pytest.mark.parametrize("folder", ["agents", "benchmarks"])
def test_scripts_import_dependencies_and_extras(folder):
    dependencies, extras = declared()
    everything = dependencies.union(*(packages for extra, packages in extras.items() if extra != "test"))
    assert undeclared(folder, lambda _: everything, everything) == []


def test_the_tests_import_dependencies_and_the_test_extra():
    dependencies, extras = declared()
    allowed = dependencies | extras["test"]
    assert undeclared("tests", lambda _: allowed, allowed) == []
