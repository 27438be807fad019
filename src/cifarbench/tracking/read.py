"""The pipeline's current MLflow runs as pandas DataFrames (reusable outside the report).

    load_runs(uri, experiment, preset)       one row per current training run of the preset
    load_tuning(uri, experiment, preset)     one row per current tuning study (`tune/<arch>[/<ablation>]`)
    load_histories(uri, runs)                one row per (run, epoch) of the per-epoch metrics
    load_confusions(uri, run_ids)            each run's test confusion matrix (its logged artifact)

Columns follow `mlflow.search_runs`: `metrics.<name>`, `params.<name>`, `tags.<name>`, plus the identity
columns run_id, run_name, arch, ablation, ablation_group, seed (int) and status (the benchmark's own
completed / early_stopped / diverged). "Current" is the tag CURRENT = 'true', set on a run once it
finished and taken from the runs it replaced (runs.mark_current), so replaced reruns never appear. Used by
the report and the nightly comparison.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cifarbench.errors import CifarbenchError
from cifarbench.tracking import store
from cifarbench.tracking.tags import ABLATION, ABLATION_GROUP, ARCH, CURRENT, KIND, PRESET, SEED, STATUS, TUNE, query

EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
COLUMNS = (ARCH, ABLATION, ABLATION_GROUP, SEED, STATUS)  # tags that become plain columns of load_runs
CONFUSION_ARTIFACT = re.compile(r"seed\d+-confusion\.json")  # runner.py logs {"classes": [...], "confusion": [[...]]}
PAGE = 1000  # runs per search request (MLflow's server caps a page at 50,000)


def column(tag: str) -> str:
    """The column of a frame here that holds the tag `tag` (a name from cifarbench.tracking.tags)."""
    return f"tags.{tag}"


def load_runs(tracking_uri: str, experiment: str, preset: str) -> pd.DataFrame:
    """The current training runs of `preset` in `experiment`, one row each (empty frame if none)."""
    frame = _load_current(tracking_uri, experiment, preset)
    if column(KIND) in frame:
        frame = frame[frame[column(KIND)].isna()].drop(columns=column(KIND))
    for tag in COLUMNS:
        frame[tag] = frame.get(column(tag), pd.Series(index=frame.index, dtype=object))
    frame[SEED] = pd.to_numeric(frame[SEED], errors="coerce").astype("Int64")
    first = ["run_id", "run_name", *COLUMNS]
    return frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)


def load_tuning(tracking_uri: str, experiment: str, preset: str) -> pd.DataFrame:
    """The current tuning studies of `preset` (parent runs `tune/<arch>`, `tune/<arch>/<ablation>` for an
    ablation's own study), one row each, with the columns arch and ablation (empty on a study's run written
    before the ablation tag existed: a baseline's study)."""
    frame = _load_current(tracking_uri, experiment, preset)
    if column(KIND) not in frame:
        return pd.DataFrame(columns=["run_id", "run_name", ARCH, ABLATION])
    frame = frame[frame[column(KIND)] == TUNE].copy()
    frame[ARCH] = frame[column(ARCH)]
    frame[ABLATION] = frame.get(column(ABLATION), pd.Series(index=frame.index, dtype=object))
    return frame.reset_index(drop=True)


def load_histories(tracking_uri: str, runs: pd.DataFrame, metrics: tuple[str, ...] = EPOCH_METRICS) -> pd.DataFrame:
    """Per-epoch metrics of `runs` (a load_runs frame): columns run_id, arch, ablation, seed, epoch, *metrics.

    Epochs count from 1; a value logged twice for one epoch (a resumed run) keeps the later one. The final
    summary metrics logged without a step (step 0) are not epochs and are left out.
    """
    client = store.client(tracking_uri)
    records = [
        {"run_id": run_id, "key": key, "epoch": m.step, "value": m.value, "timestamp": m.timestamp}
        for run_id in runs["run_id"] for key in metrics for m in client.get_metric_history(run_id, key)
        if m.step >= 1
    ]  # fmt: skip
    columns = ["run_id", "arch", "ablation", "seed", "epoch", *metrics]
    if not records:
        return pd.DataFrame(columns=columns)
    long = pd.DataFrame(records).sort_values("timestamp").drop_duplicates(["run_id", "key", "epoch"], keep="last")
    wide = long.pivot(index=["run_id", "epoch"], columns="key", values="value").reset_index()
    wide = wide.merge(runs[["run_id", "arch", "ablation", "seed"]], on="run_id")
    return wide.reindex(columns=columns).sort_values(["arch", "ablation", "seed", "epoch"]).reset_index(drop=True)


def load_confusions(tracking_uri: str, run_ids: Iterable[str]) -> dict[str, pd.DataFrame]:
    """run id -> its confusion matrix on the test images: counts, true class (rows) x predicted class
    (columns), from the artifact `seed<k>-confusion.json` the runner logs. A run without one (or with one
    that is not a square matrix over its classes) is absent: the report counts the matrices it found."""
    client = store.client(tracking_uri)
    matrices = {}
    with tempfile.TemporaryDirectory() as folder:
        for run_id in run_ids:
            names = [a.path for a in client.list_artifacts(run_id) if CONFUSION_ARTIFACT.fullmatch(a.path)]
            if not names:
                continue
            local = client.download_artifacts(run_id, names[0], str(Path(folder, run_id)))
            matrix = _confusion_frame(json.loads(Path(local).read_text(encoding="utf-8")))
            if matrix is not None:
                matrices[run_id] = matrix
    return matrices


def _confusion_frame(logged: dict) -> pd.DataFrame | None:
    classes, counts = logged.get("classes"), logged.get("confusion")
    if not (isinstance(classes, list) and isinstance(counts, list) and len(counts) == len(classes)
            and all(isinstance(row, list) and len(row) == len(classes) for row in counts)):
        return None
    names = [str(c) for c in classes]
    return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


def _load_current(tracking_uri: str, experiment: str, preset: str) -> pd.DataFrame:
    if not re.fullmatch(r"[\w.-]+", preset):  # it goes into a filter string, which has no escaping
        raise ValueError(f"preset name {preset!r}: use letters, digits, '_', '.', '-'")
    client = store.client(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as exc:  # the report and the nightly: a server that is down is named, not a traceback
        if store.unreachable(exc):
            raise CifarbenchError(store.unreachable_message(tracking_uri)) from exc
        raise
    if found is None:
        return pd.DataFrame(columns=["run_id", "run_name"])
    current = query({PRESET: preset, CURRENT: "true"})
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], current, max_results=PAGE, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    rows = [{"run_id": r.info.run_id, "run_name": r.info.run_name,
             "start_time": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC"),
             **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
             **{f"params.{k}": v for k, v in r.data.params.items()},
             **{column(k): v for k, v in r.data.tags.items() if not k.startswith("mlflow.")}} for r in runs]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "run_name"])
