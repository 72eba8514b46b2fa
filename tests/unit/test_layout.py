"""The package shows the architecture: imports only go down (core < stages in pipeline order < the Airflow
glue and the status report < the simulator < the CLI), no stage imports the simulator, and every
sub-package's __init__ is a docstring and nothing else (DAG parsing imports them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from driftloop.core.settings import PACKAGE_DIR

LAYERS = {
    "core": 0, "ingest": 1, "monitor": 2, "learn": 3, "promote": 4, "serve": 5,
    "airflow": 6, "report": 6, "ui": 7, "sim": 7, "cli": 8,
}  # fmt: skip
MODULES = sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _package(path: Path) -> str:
    return path.relative_to(PACKAGE_DIR).with_suffix("").parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, driftloop sub-package) of every import of the module, at any depth (lazy imports count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "driftloop" else [f"driftloop.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names if name.startswith("driftloop.")]
    return found


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__init__.py" or p.parent != PACKAGE_DIR],
                         ids=lambda p: str(p.relative_to(PACKAGE_DIR)))  # fmt: skip
def test_imports_only_go_down(path):
    own = _package(path)
    assert own in LAYERS, f"{own}: a new sub-package needs its place in LAYERS (and in driftloop/__init__.py)"
    upward = [f"line {line}: driftloop.{target}" for line, target in _imports(path)
              if target != own and LAYERS[target] >= LAYERS[own]]  # fmt: skip
    assert not upward, f"{path.relative_to(PACKAGE_DIR)} ({own}) imports sideways or up: {upward}"


@pytest.mark.parametrize("package", sorted(p for p in LAYERS if (PACKAGE_DIR / p).is_dir()))
def test_every_sub_package_says_what_it_does_and_imports_nothing(package):
    init = PACKAGE_DIR / package / "__init__.py"
    tree = ast.parse(init.read_text())
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring) > 80, f"{package}/__init__.py needs a docstring: what the stage does"
    assert all(isinstance(node, ast.Expr) for node in tree.body), f"{package}/__init__.py must hold only its docstring"


def test_no_stage_imports_the_simulator():
    offenders = [f"{p.relative_to(PACKAGE_DIR)}:{line}" for p in MODULES if _package(p) not in ("sim", "cli")
                 for line, target in _imports(p) if target == "sim"]  # fmt: skip
    assert offenders == []
