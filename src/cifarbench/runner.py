"""One run of the benchmark: one seed of one (architecture, ablation) cell, trained on the training
split, checked per epoch on the validation split, evaluated once on the test set, tracked in MLflow.
`train_one` is the training it shares with a tuning trial (cifarbench.tuning), which never loads the
test split.

`train_run(spec)` is what an executor's worker calls (cifarbench.execute): everything it needs is in the
picklable `RunSpec`, with absolute paths (a Ray node may run it in another folder). It writes:

    <work_dir>/seed<k>.pt            checkpoint after every epoch (a killed or retried run resumes from it)
    <work_dir>/seed<k>.mlflow-run    the run's MLflow id (the resumed run continues the same MLflow run)
    <work_dir>/seed<k>.result.json   the finished run's summary and history (the cell is assembled from these)
    <models_dir>/seed<k>.pt          the final weights (state_dict)
    <models_dir>/seed<k>.json        the config that rebuilds their model (`load_trained`)

and returns the result. A run whose result file exists returns it without training again. The MLflow run
records its lineage (cifarbench.tracking.lineage): the images it trained, validated and was tested on as
dataset inputs, and the two models_dir files as its `model/` artifacts.

`load_trained(run id or weights file)` gives back a trained model, ready to evaluate:

    from cifarbench.runner import load_trained
    model = load_trained("3f2a...")                                        # an MLflow run id (mlflow.db here)
    model = load_trained("runs/default/cells/lenet5/baseline/models/seed0.pt")  # the DVC output
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cifarbench.config import TrackingConfig
from cifarbench.data import CLASSES, Split, load_split
from cifarbench.data.splits import INFO_FILE, stratified_draw
from cifarbench.engine import EpochRecord, EvalResult, FitResult, evaluate, fit
from cifarbench.errors import CifarbenchError
from cifarbench.io import DamagedFile, atomic_path, read_checked_json, read_json, write_json_atomic
from cifarbench.models import ModelConfig, build_model_from
from cifarbench.models.profile import count_parameters, flops_per_image
from cifarbench.plan import Budget, Cell
from cifarbench.tracking import Archive, DataSubset, Tracker, download_model_files, tracking_uri
from cifarbench.tracking.lineage import TEST, TRAINING, VALIDATION
from cifarbench.tracking.tags import CUDA_VISIBLE_DEVICES, DID_NOT_TRAIN, FAST, HOST, STATUS, TRAINED, WORKER

# A run "did not train" when neither its training nor its validation accuracy ever rose more than 3 binomial sd
# above chance, or when one class takes this share of its test predictions (a collapsed network): it is named
# and never averaged.
CHANCE_SDS = 3.0
COLLAPSED_SHARE = 0.9

HISTORY_FIELDS = ["seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    cell: Cell
    seed: int
    prepared: Path  # data/prepared, absolute
    work_dir: Path  # the cell's checkpoint folder for its key, absolute
    models_dir: Path  # the cell's DVC output folder for weights, absolute
    tracker: Tracker
    tags: dict[str, str]  # provenance, identity, config hash
    cpu_paths: tuple[str | None, bool] | None = None  # measured on this CPU for this model (cifarbench.fastpaths)
    data_url: str | None = None  # where the archive came from (params.yaml data.url); None: the prepared folder is named

    @property
    def name(self) -> str:
        return f"{self.cell.name}/seed{self.seed}"

    def file(self, suffix: str) -> Path:
        return self.work_dir / f"seed{self.seed}{suffix}"


@functools.lru_cache(maxsize=12)
def load_subset(prepared: Path, split: str, size: int | None, skip: int = 0) -> Split:
    """Images skip .. skip + size of one split, loaded once per worker process (memory-mapped files: only
    these images are read). The engine never writes into a Split, so runs and trials share it."""
    return load_split(prepared, split, size, skip=skip)


@functools.lru_cache(maxsize=12)
def train_subset(prepared: Path, size: int | None, seed: int) -> Split:
    """The seed's own stratified draw of `size` training images (all when None), the same for every cell."""
    if size is None:
        return load_subset(prepared, "train", None)
    return load_split(prepared, "train", draw=stratified_draw(prepared, "train", size, seed))


def training_data(prepared: Path, budget: Budget, seed: int) -> tuple[Split, Split]:
    """What one seed trains and validates on: its own draw of the training split, the fixed validation subset
    (the yardstick early stopping and tuning compare against stays the same for every seed)."""
    return train_subset(prepared, budget.train_subset, seed), load_subset(prepared, "val", budget.val_subset)


def test_data(prepared: Path, budget: Budget) -> Split:
    """The scored test images: all but the first `test_skip` (looked at by a past choice), or `test_subset` of them."""
    return load_subset(prepared, "test", budget.test_subset, budget.test_skip)


def data_subsets(budget: Budget, seed: int, images: tuple[int, int, int]) -> list[DataSubset]:
    """What `training_data` and `test_data` pick, in words MLflow records; `images`: (train, val, test) counts."""
    train = {"stratified_draw": budget.train_subset, "seed": seed} if budget.train_subset else {"all": True}
    val = {"first": budget.val_subset} if budget.val_subset else {"all": True}
    test = {"skip": budget.test_skip, "first": budget.test_subset} if budget.test_subset else {"skip": budget.test_skip}
    return [DataSubset(TRAINING, "train", images[0], train), DataSubset(VALIDATION, "val", images[1], val),
            DataSubset(TEST, "test", images[2], test)]


def archive_of(prepared: Path, url: str | None) -> Archive:
    """The archive `prepared` was cut from (its info.json) and where it came from (`url`, else `prepared`)."""
    info = read_json(prepared / INFO_FILE)
    return Archive(url or str(prepared), info["archive_md5"], info["val_size"], info["seed"])


def train_one(cell: Cell, seed: int, data: tuple[Split, Split], *, on_epoch: Callable[[EpochRecord], None] | None = None,
              checkpoint: Path | None = None, cpu_paths: tuple[str | None, bool] | None = None) -> tuple[FitResult, nn.Module]:
    """Seed, build and fit one model of `cell` on `data` (train, val): the training a benchmark run and a
    tuning trial share (the trial with its lr and weight decay in `cell`). Returns the fit's result and
    the trained model."""
    torch.manual_seed(seed)
    model = build_model_from(cell.model)
    result = fit(model, *data, cell.train, seed=seed, checkpoint=checkpoint, on_epoch=on_epoch, cpu_paths=cpu_paths)
    return result, model


def train_run(spec: RunSpec) -> dict:
    """Train, validate and test one seed; returns {"summary": ..., "history": [...]} (also in its result file)."""
    done = spec.file(".result.json")
    if done.is_file():
        try:
            return read_checked_json(done, damaged_result)
        except DamagedFile as exc:  # a run is cheap to redo; a cell failing on every rerun is not
            print(f"warning: {exc}: {spec.name} trains again (resuming from its checkpoint)", file=sys.stderr, flush=True)
    cell, seed = spec.cell, spec.seed
    data = training_data(spec.prepared, cell.budget, spec.seed)
    test = test_data(spec.prepared, cell.budget)
    id_file = spec.file(".mlflow-run")
    resume = id_file.read_text().strip() if id_file.is_file() else None
    params = {**cell.config(), "seed": seed}
    where = placement()
    with spec.tracker.training_run(spec.name, spec.tags | where, params, resume, id_file) as log:

        log.log_datasets(archive_of(spec.prepared, spec.data_url),
                         data_subsets(cell.budget, seed, (len(data[0]), len(data[1]), len(test))))

        def record_epoch(record: EpochRecord) -> None:
            log.log_epoch(dataclasses.asdict(record), record.epoch)

        started = time.perf_counter()
        result, model = train_one(cell, seed, data, on_epoch=record_epoch, checkpoint=spec.file(".pt"),
                                  cpu_paths=spec.cpu_paths)
        tested = evaluate(model, test, batch_size=cell.train.eval_batch_size, fast=cell.train.fast,
                          cpu_paths=spec.cpu_paths)
        summary = {
            "status": result.status,
            "test_acc": tested.accuracy,
            "test_loss": tested.loss,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "stopped_epoch": result.stopped_epoch,
            "train_seconds": result.seconds,
            "wall_seconds": time.perf_counter() - started,
            "images_per_s": _median([r["images_per_s"] for r in result.history]),
            "params": count_parameters(model),
            "flops_per_image": flops_per_image(model),
            "test_images": len(test),
            DID_NOT_TRAIN: did_not_train(result, tested, len(data[0]), len(data[1])),
        }
        per_class = {f"test_acc_{name}": acc for name, acc in zip(CLASSES, tested.per_class_accuracy)}
        fast_paths = result.fast_paths | {"threads": torch.get_num_threads()}
        log.log_final({k: v for k, v in summary.items() if isinstance(v, (int, float)) and v == v} | per_class,
                      {STATUS: result.status, TRAINED: str(not summary[DID_NOT_TRAIN]).lower(),
                       DID_NOT_TRAIN: summary[DID_NOT_TRAIN], **where, **{f"{FAST}{k}": str(v) for k, v in fast_paths.items()}})
        confusion = spec.file("-confusion.json")
        write_json_atomic(confusion, {"classes": list(CLASSES), "confusion": tested.confusion})
        log.log_artifact(confusion)
        weights = spec.models_dir / f"seed{seed}.pt"
        with atomic_path(weights) as tmp:
            torch.save(model.state_dict(), tmp)
        write_json_atomic(weights.with_suffix(".json"), {"run": spec.name, "preset": cell.preset, "seed": seed,
                                                         **cell.config()})
        log.log_model_files(weights, weights.with_suffix(".json"))
        log.mark_current()
    history = [{"seed": seed, **{k: r[k] for k in HISTORY_FIELDS[1:]}} for r in result.history]
    out = {"summary": summary | {"run_id": log.run_id, "fast_paths": fast_paths}, "history": history}
    write_json_atomic(done, out)
    return out


# What the train stage reads of a seed's result file (pipeline: the cell's summary, the progress line).
SUMMARY_NUMBERS = ("test_acc", "train_seconds", "wall_seconds")


def damaged_result(result: dict) -> str | None:
    """Why a seed's result file cannot be used (None when it can): its summary or history missing or of the
    wrong type. It was written by train_run, so anything else is a damaged or hand-edited file."""
    summary, history = result.get("summary"), result.get("history")
    if not isinstance(summary, dict) or not isinstance(history, list):
        return "has no summary and history"
    if not isinstance(summary.get("status"), str):
        return "has no status in its summary"
    if bad := [k for k in SUMMARY_NUMBERS if not isinstance(summary.get(k), (int, float))]:
        return f"has no number for {', '.join(bad)} in its summary"
    if not all(isinstance(row, dict) and all(k in row for k in HISTORY_FIELDS) for row in history):
        return "has a history row without every field"
    return None


def load_trained(source: str | Path, tracking: str | None = None) -> nn.Module:
    """A trained model in eval mode, on the CPU: from an MLflow run id (its `model/` artifacts, in the store
    `tracking`, by default the pipeline's: MLFLOW_TRACKING_URI or sqlite:///mlflow.db here), from a weights
    file `seed<k>.pt` with its `seed<k>.json` beside it, or from a folder holding one such pair (a downloaded
    `model/`). The config file rebuilds the model; the weights fill it."""
    path = Path(source)
    if path.is_file() or path.is_dir():
        return _load_weights(path)
    with tempfile.TemporaryDirectory(prefix="cifarbench-model-") as tmp:
        uri = tracking or tracking_uri(TrackingConfig())
        return _load_weights(download_model_files(uri, str(source), Path(tmp)))


def _load_weights(path: Path) -> nn.Module:
    if path.is_dir():
        found = sorted(path.glob("*.pt"))
        if len(found) != 1:
            raise CifarbenchError(f"{path}: expected one weights file (*.pt) in the folder, found {len(found)}: "
                                  "pass the weights file itself")
        path = found[0]
    config = path.with_suffix(".json")
    if not config.is_file():
        raise CifarbenchError(f"{path}: no {config.name} beside it (the config that rebuilds the model; weights "
                              "trained before it was written have none): load by MLflow run id, or train the cell again")
    model = build_model_from(ModelConfig.model_validate(read_json(config)["model"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def did_not_train(result: FitResult, tested: EvalResult, train_images: int, val_images: int) -> str:
    """Why a finished run did not train ("" when it did): its loss stopped being finite, neither its training
    accuracy (over an epoch's images) nor its validation accuracy ever rose CHANCE_SDS binomial sd above chance
    (a short run that learned shows on validation before its running training accuracy catches up), or it
    predicts one class for nearly every test image (COLLAPSED_SHARE)."""
    if result.status == "diverged":
        return "the training loss stopped being finite"
    classes = len(tested.per_class_accuracy)
    chance = 1 / classes

    def above_chance(key: str, images: int) -> bool:
        best = max((h[key] for h in result.history if h.get(key) == h.get(key) and h.get(key) is not None), default=0.0)
        return images > 0 and best > chance + CHANCE_SDS * (chance * (1 - chance) / images) ** 0.5

    if not (above_chance("train_acc", train_images) or above_chance("val_acc", val_images)):
        best_train = max((h["train_acc"] for h in result.history), default=0.0)
        best_val = max((h.get("val_acc") or 0.0 for h in result.history), default=0.0)
        return (f"accuracy never rose above chance (best epoch: training {100 * best_train:.1f} %, "
                f"validation {100 * best_val:.1f} %; chance {100 * chance:.0f} %)")
    predicted = [sum(row[j] for row in tested.confusion) for j in range(classes)]
    share = max(predicted) / max(sum(predicted), 1)
    if share >= COLLAPSED_SHARE:
        return f"one class predicted for {100 * share:.0f} % of the test images"
    return ""


def placement() -> dict[str, str]:
    """Where this attempt of a run ran: host, Ray node id ('local' outside Ray) and the GPUs it was given.
    Set when the run starts and again when it ends: a run retried on another node names where it finished."""
    worker = "local"
    if "ray" in sys.modules:  # never import Ray (0.5 s) in a local worker
        import ray

        if ray.is_initialized():
            worker = ray.get_runtime_context().get_node_id()
    return {HOST: socket.gethostname(), WORKER: worker, CUDA_VISIBLE_DEVICES: os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else 0.0
