"""One owner per concern (house style rule 5): only cifarbench.tracking imports MLflow, only
cifarbench.tuning imports Optuna; importing the tracking package imports neither MLflow nor pandas."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "cifarbench"


def importers(library: str) -> set[str]:
    """The modules of src/cifarbench (paths relative to it) with an import statement of `library`."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == library or n.startswith(f"{library}.") for n in names):
                found.add(path.relative_to(PACKAGE).as_posix())
    return found


@pytest.mark.parametrize("library, owner", [("mlflow", "tracking/"), ("optuna", "tuning/")])
def test_one_package_imports_each_library(library, owner):
    found = importers(library)
    assert found, f"no module imports {library}: the walk is broken"
    assert {m for m in found if not m.startswith(owner)} == set()


def test_importing_tracking_loads_neither_mlflow_nor_pandas():
    code = "import sys, cifarbench.tracking; print(sorted(m for m in ('mlflow', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
