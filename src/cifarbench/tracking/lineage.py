"""Lineage of a training run in MLflow: which images made it (dataset inputs) and the weights it made
(the `model/` artifacts, reloaded by cifarbench.runner.load_trained).

Datasets: a run has three inputs, one per MLflow context (training, validation, test), each an MLflow
dataset that names the archive it was cut from (source: params.yaml `data.url`), the validation split made
from it (data.val_size, data.seed) and how the run's images were picked from their split (a seed's
stratified draw, the first N, the first N after a skip). Its digest is stable: the archive's md5 and a hash
of that description, so two runs on the same images show one dataset in the MLflow UI, and any change to
the images (another archive, split, draw or subset) shows another.

Weights: `model/seed<k>.pt` (a state_dict) and `model/seed<k>.json` (the cell's config, from which the
model is rebuilt), the same two files the runner keeps in the cell's models folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarbench.errors import CifarbenchError
from cifarbench.tracking import store

CONTEXT = "mlflow.data.context"  # MLflow's input tag: what the run used a dataset for
TRAINING, VALIDATION, TEST = "training", "validation", "test"  # its values, as MLflow's own autologgers write them
MODEL_DIR = "model"  # the artifact folder of a run's weights and their config
DIGEST_CHARS = 32  # MLflow stores a dataset digest in 36 characters
RACE_RETRIES = 3  # log_datasets: attempts after losing the store's look-up-then-insert race


@dataclass(frozen=True)
class DataSubset:
    """The images a run used in one role."""

    context: str  # TRAINING, VALIDATION or TEST
    split: str  # the prepared split they come from: train, val or test
    images: int  # how many
    selection: Mapping[str, Any]  # how they were picked from the split: {"stratified_draw_seed": 3}, {"skip": 2000}, ...


@dataclass(frozen=True)
class Archive:
    """The archive every split is cut from, and how the validation split was cut (data/prepared/info.json)."""

    url: str  # where it was downloaded from (params.yaml data.url), or the prepared folder when unknown
    md5: str
    val_size: int  # training images held out as the validation split
    split_seed: int  # seed of that stratified split


def dataset(archive: Archive, subset: DataSubset):
    """The MLflow dataset entity of `subset`: source the archive's URL, digest md5 + the subset's description."""
    from mlflow.entities import Dataset

    profile = {"archive_md5": archive.md5, "validation_split": {"size": archive.val_size, "seed": archive.split_seed},
               "split": subset.split, "images": subset.images, "selection": dict(subset.selection)}
    described = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()
    digest = f"{archive.md5[:8]}-{described}"[:DIGEST_CHARS]
    kind, source = (("http", {"url": archive.url}) if archive.url.startswith(("http://", "https://"))
                    else ("local", {"uri": archive.url}))  # MLflow's own source types (HTTP, LocalArtifact)
    return Dataset(name=f"cifar10-{subset.split}", digest=digest, source_type=kind, source=json.dumps(source),
                   profile=json.dumps(profile))


def log_datasets(client, run_id: str, archive: Archive, subsets: Sequence[DataSubset]) -> None:
    """The run's dataset inputs, one per subset with its context (logging the same again, on resume, adds none).

    MLflow's store looks a dataset up, then inserts it when absent: two runs starting at once (every seed's
    first runs share their validation and test datasets) can both find it absent, and the second insert
    fails on the store's unique key. Then the dataset exists, and logging again links it: retried."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    inputs = [DatasetInput(dataset(archive, s), [InputTag(CONTEXT, s.context)]) for s in subsets]
    for attempt in range(RACE_RETRIES + 1):
        try:
            client.log_inputs(run_id, inputs)
            return
        except MlflowException as exc:
            if attempt == RACE_RETRIES or not _lost_insert_race(exc):
                raise
            time.sleep(0.1 * (attempt + 1))


def _lost_insert_race(exc: Exception) -> bool:
    """Whether `exc` is the store refusing a second insert of the same row (SQLite, PostgreSQL, MySQL)."""
    text = str(exc)
    return any(marker in text for marker in ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry"))


def log_model_files(client, run_id: str, weights: Path, config: Path) -> None:
    """The trained weights and the config that rebuilds their model, under `model/`."""
    for path in (weights, config):
        client.log_artifact(run_id, str(path), MODEL_DIR)


def download_model_files(tracking_uri: str, run_id: str, destination: Path) -> Path:
    """The run's `model/` folder, downloaded into `destination`; returns the local folder."""
    client = store.client(tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as exc:  # MlflowException: no such run
        raise CifarbenchError(f"no MLflow run {run_id!r} in {tracking_uri}: pass a run id from the MLflow UI (or "
                              "search_runs), or set tracking_uri to the store that holds it") from exc
    try:
        return Path(client.download_artifacts(run_id, MODEL_DIR, str(destination)))
    except Exception as exc:
        raise CifarbenchError(f"MLflow run {run_id} has no {MODEL_DIR}/ artifacts (a run from before weights were "
                              "logged, or one that did not finish): train its cell again") from exc
