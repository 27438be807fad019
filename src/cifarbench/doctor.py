"""`cifarbench doctor`: finds the state files a killed process can leave damaged, and repairs what can be
repaired without losing anything the user made.

- `dvc.lock` torn (a SIGKILL of `dvc repro` while DVC rewrote it): every later `dvc repro` fails DVC's
  own parsing or validation, before any stage script runs, so no stage can notice. Moved aside to
  `dvc.lock.torn-<time>`: the lock only records what DVC last ran, so without it `dvc repro` runs every
  stage again, and the stages' own skipping makes that cheap (the train stage trains no finished cell, the
  tune stage asks no trial of a finished study, the download keeps a verified archive).
- the Optuna journal: a torn last line is cut off (a copy kept); other damage is reported (cifarbench.tuning.storage).
- the MLflow SQLite store: a half-made one is reported with what to do (cifarbench.tracking.store); never moved here,
  since the runs in it are the user's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cifarbench.errors import CifarbenchError
from cifarbench.paths import DVC_LOCK, PARAMS

LOCK = DVC_LOCK


def lock_problem(path: Path = LOCK) -> str | None:
    """Why DVC would refuse `path` (None if it is fine or absent), judged by DVC's own parser and schema."""
    if not path.is_file():
        return None
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.serialize import YAMLFileCorruptedError, parse_yaml
    from voluptuous import Invalid

    try:
        COMPILED_LOCKFILE_SCHEMA(parse_yaml(path.read_text(), str(path)) or {})
    except YAMLFileCorruptedError as exc:
        return f"not valid YAML ({' '.join(str(exc.__cause__ or exc).split())})"
    except Invalid as exc:
        return f"not a valid lock file ({exc})"
    return None


def move_aside(path: Path, why: str) -> Path:
    """Rename `path` to `<name>.<why>-<time>` beside it (kept for inspection, out of the tools' way)."""
    aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    return aside


def repair_lock(path: Path = LOCK) -> str | None:
    problem = lock_problem(path)
    if problem is None:
        return None
    aside = move_aside(path, "torn")
    return (f"{path}: {problem}; moved aside to {aside}. `dvc repro` now runs every stage again, "
            "skipping the work already done (finished cells are not trained again)")


def run_checks(params: Path) -> tuple[list[str], list[str]]:
    """(repairs made, problems left for the user), for the lock, the journal and the tracking store."""
    from cifarbench.params import load
    from cifarbench.tracking import check_sqlite_store, tracking_uri
    from cifarbench.tuning import repair_journal, storage_url

    repaired, problems = [], []
    if (fixed := repair_lock()) is not None:
        repaired.append(fixed)
    if not params.is_file():
        return repaired, problems
    try:
        loaded = load(params)
    except CifarbenchError as exc:  # the lock is repaired above; the stores are found through the params
        problems.append(str(exc))
        return repaired, problems
    try:
        if (fixed := repair_journal(storage_url(loaded.tune))) is not None:
            repaired.append(fixed)
    except CifarbenchError as exc:
        problems.append(str(exc))
    try:
        check_sqlite_store(tracking_uri(loaded.tracking))
    except CifarbenchError as exc:
        problems.append(str(exc))
    return repaired, problems


# `cifarbench doctor` (cifarbench.cli)
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=PARAMS, help="params file (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    repaired, problems = run_checks(args.params)
    for line in repaired:
        print(f"repaired: {line}")
    for line in problems:
        print(f"problem: {line}")
    if not repaired and not problems:
        print("doctor: dvc.lock, the Optuna journal and the MLflow store are fine")
    return 1 if problems else 0
