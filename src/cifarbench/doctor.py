"""What `cifarbench doctor` (cifarbench.commands.doctor) does: find the state files a killed process can leave
damaged, and repair what can be repaired without losing anything the user made.

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

import time
from pathlib import Path
from typing import TYPE_CHECKING

from cifarbench.errors import CifarbenchError
from cifarbench.paths import DVC_LOCK

if TYPE_CHECKING:
    from cifarbench.config import TrackingConfig
    from cifarbench.tuning import TuneConfig

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


def check_stores(tune: TuneConfig, tracking: TrackingConfig) -> tuple[list[str], list[str]]:
    """(repairs made, problems left for the user) of the Optuna journal and the MLflow store that params.yaml's
    `tune` and `tracking` name."""
    from cifarbench.tracking import check_sqlite_store, tracking_uri
    from cifarbench.tuning import repair_journal, storage_url

    repaired, problems = [], []
    try:
        if (fixed := repair_journal(storage_url(tune))) is not None:
            repaired.append(fixed)
    except CifarbenchError as exc:
        problems.append(str(exc))
    try:
        check_sqlite_store(tracking_uri(tracking))
    except CifarbenchError as exc:
        problems.append(str(exc))
    return repaired, problems
