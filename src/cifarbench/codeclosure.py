"""Which of the package's source files a piece of the pipeline runs: the closure of its `cifarbench.*`
imports, found statically (`ast`, imports inside functions included, so a lazy import counts too).

One answer for three questions that were three hand-kept lists: the code each DVC stage depends on
(dvc.yaml `deps`, checked by tests/test_dvc_deps.py), the training code in a cell's key
(pipeline.training_code_digest) and the code in a tuning study's name (tuning.search.code_digest).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

from cifarbench.paths import SRC

PACKAGE = SRC.name  # "cifarbench"


def module_file(module: str, root: Path = SRC.parent) -> Path | None:
    """The source file of `module` (a package's __init__.py) under `root` (src/), or None if there is none."""
    base = root.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def module_name(path: Path, root: Path = SRC.parent) -> str:
    parts = path.resolve().relative_to(root.resolve()).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = SRC.parent) -> set[str]:
    """The `cifarbench.*` modules `path` imports anywhere in it, with the packages above each (importing
    cifarbench.data.splits runs cifarbench/__init__.py and cifarbench/data/__init__.py first)."""
    inside = path.resolve().is_relative_to(root.resolve())
    here = module_name(path, root) if inside else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names
                      if module_file(f"{base}.{alias.name}", root) is not None}  # `from pkg import module`
    ours = {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}
    return {".".join(m.split(".")[:i]) for m in ours for i in range(1, m.count(".") + 2)}


def closure(entries: Iterable[Path | str], root: Path = SRC.parent) -> set[Path]:
    """The package's source files that importing `entries` (files, or module names) runs, entries included."""
    todo = [Path(e) if isinstance(e, Path) else module_file(e, root) for e in entries]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(m, root) for m in imports_of(path, root))
    return seen


def digest(files: Iterable[Path], root: Path = SRC.parent) -> str:
    """sha256 over the files' names (relative to `root`) and contents, in a fixed order."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.resolve().relative_to(root.resolve()).as_posix()):
        h.update(path.resolve().relative_to(root.resolve()).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# What a run executes (cifarbench.runner.train_run and all it imports: engine, models, data, plan, ...):
# the code in every cell's key, so a change to any of it retrains (a conservative superset of what can
# change a run's numbers: no hand-kept list to forget a file in).
RUN_ENTRY = "cifarbench.runner"


@functools.lru_cache(maxsize=1)
def training_code_digest() -> str:
    return digest(closure([RUN_ENTRY]))
