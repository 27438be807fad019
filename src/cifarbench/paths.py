"""Where the pipeline's files live, relative to the project root (the working directory of `dvc repro`
and of `cifarbench <command>`). The one owner of these paths: dvc.yaml names the same ones (it must, DVC
reads them there), and tests/test_dvc_deps.py checks the code side of dvc.yaml.

    params.yaml                                         the parameters (cifarbench.params)
    data/raw/cifar-10-python.tar.gz                     download: the verified archive
    data/prepared/                                      prepare: {train,val,test}-{images,labels}.npy, info.json
    runs/<preset>/tuned/<arch>.json                     tune: best lr / weight decay of the baseline's study
    runs/<preset>/tuned/<arch>/<ablation>.json          tune: the same, of a `tune: own` ablation's study
    runs/<preset>/cells/<arch>/<ablation>/              train: result.json (key, per-seed results),
                                                        history.csv, models/seed<k>.pt
    runs/<preset>/metrics/<arch>/<ablation>.json        train: the cell's metrics (`dvc metrics show`)
    runs/<preset>/curves/<arch>/<ablation>.csv          train: its mean learning curve (`dvc plots show`)
    runs/checkpoints/<preset>/<arch>/<ablation>/<key>/  resumable checkpoints and finished runs of an
                                                        unfinished cell (not a DVC output)
    reports/                                            report: comparison.{md,html}, figures/, metrics.json
    reports/nightly.md, reports/nightly/                the nightly's report, baseline.json, history/
    optuna/studies.journal                              the default Optuna storage (params.yaml tune.storage)
    dvc.lock                                            DVC's record of the last run (read by report, doctor)

The stores (mlflow.db, the Optuna journal) given as relative paths belong to the user's repository, also when
a stage runs in DVC's temporary copy of it (`in_repository`).
"""

from __future__ import annotations

import os
from pathlib import Path

PARAMS = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")
ARCHIVE = Path("data/raw/cifar-10-python.tar.gz")
PREPARED = Path("data/prepared")
RUNS = Path("runs")
REPORTS = Path("reports")
NIGHTLY_REPORT = REPORTS / "nightly.md"
NIGHTLY_BASELINE = REPORTS / "nightly" / "baseline.json"
NIGHTLY_HISTORY = REPORTS / "nightly" / "history"
OPTUNA_JOURNAL = Path("optuna/studies.journal")
SRC = Path(__file__).parent  # the package's own code (cifarbench.codeclosure)
# `dvc exp run --temp` and `--queue` run an experiment in a copy of the repository at <repo>/.dvc/tmp/exps/<tmpdir>/
# (DVC's EXEC_TMP_DIR under repo.tmp_dir), deleted when it ends
DVC_EXPERIMENT_COPIES = "/.dvc/tmp/exps/"


def runs_of(preset: str, kind: str) -> Path:
    """runs/<preset>/<kind>: kind is one of tuned, cells, metrics, curves (the stages' outputs in dvc.yaml)."""
    return RUNS / preset / kind


def tuned_path(preset: str, arch: str, ablation: str | None = None) -> Path:
    """The tuned values of arch's baseline study, or (`ablation`) of that ablation's own study."""
    tuned = runs_of(preset, "tuned")
    return tuned / f"{arch}.json" if ablation is None else tuned / arch / f"{ablation}.json"


def cell_dir(preset: str, arch: str, ablation: str) -> Path:
    return runs_of(preset, "cells") / arch / ablation


def metrics_path(preset: str, arch: str, ablation: str) -> Path:
    return runs_of(preset, "metrics") / arch / f"{ablation}.json"


def curve_path(preset: str, arch: str, ablation: str) -> Path:
    return runs_of(preset, "curves") / arch / f"{ablation}.csv"


def checkpoint_dir(preset: str, arch: str, ablation: str, key: str) -> Path:
    return RUNS / "checkpoints" / preset / arch / ablation / key


def repository(cwd: Path | None = None) -> Path:
    """The user's repository: the working directory (`cwd`, absolute), or, inside DVC's temporary copy of it for
    an experiment, the repository the copy was made from (the part of the path before DVC_EXPERIMENT_COPIES)."""
    cwd = cwd or Path.cwd()
    head, inside, _ = cwd.as_posix().partition(DVC_EXPERIMENT_COPIES)
    return Path(head) if inside else cwd


def in_repository(path: str | os.PathLike, cwd: Path | None = None) -> Path:
    """A store's path (the MLflow SQLite file, the Optuna journal) made absolute: relative paths against
    `repository()`, so a queued or --temp experiment writes its runs into the user's stores, not into the copy
    DVC deletes afterwards."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repository(cwd) / path
