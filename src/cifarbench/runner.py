"""One run of the benchmark: one seed of one (architecture, ablation) cell, trained on the training
split, checked per epoch on the validation split, evaluated once on the test set, tracked in MLflow.

`train_run(spec)` is what an executor's worker calls (cifarbench.execute): everything it needs is in the
picklable `RunSpec`, with absolute paths (a Ray node may run it in another folder). It writes:

    <work_dir>/seed<k>.pt            checkpoint after every epoch (a killed or retried run resumes from it)
    <work_dir>/seed<k>.mlflow-run    the run's MLflow id (the resumed run continues the same MLflow run)
    <work_dir>/seed<k>.result.json   the finished run's summary and history (the cell is assembled from these)
    <models_dir>/seed<k>.pt          the final weights (state_dict)

and returns the result. A run whose result file exists returns it without training again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
import time
from pathlib import Path

import torch

from cifarbench.data import CLASSES, Split, load_split
from cifarbench.engine import EpochRecord, evaluate, fit
from cifarbench.io import atomic_path, read_json, write_json_atomic
from cifarbench.models import build_model_from
from cifarbench.models.profile import count_parameters, flops_per_image
from cifarbench.plan import Cell
from cifarbench.tracking import Tracker

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

    @property
    def name(self) -> str:
        return f"{self.cell.name}/seed{self.seed}"

    def file(self, suffix: str) -> Path:
        return self.work_dir / f"seed{self.seed}{suffix}"


@functools.lru_cache(maxsize=4)
def load_data(prepared: Path, train: int | None, val: int | None, test: int | None) -> tuple[Split, Split, Split]:
    """The budget's subsets, loaded once per worker process (memory-mapped files: only these images are read)."""
    return load_split(prepared, "train", train), load_split(prepared, "val", val), load_split(prepared, "test", test)


def train_run(spec: RunSpec) -> dict:
    """Train, validate and test one seed; returns {"summary": ..., "history": [...]} (also in its result file)."""
    done = spec.file(".result.json")
    if done.is_file():
        return read_json(done)
    cell, seed = spec.cell, spec.seed
    b = cell.budget
    train, val, test = load_data(spec.prepared, b.train_subset, b.val_subset, b.test_subset)
    torch.manual_seed(seed)
    model = build_model_from(cell.model)
    id_file = spec.file(".mlflow-run")
    resume = id_file.read_text().strip() if id_file.is_file() else None
    params = {**cell.config(), "seed": seed}
    where = placement()
    with spec.tracker.training_run(spec.name, spec.tags | where, params, resume, id_file) as log:

        def record_epoch(record: EpochRecord) -> None:
            log.log_epoch(dataclasses.asdict(record), record.epoch)

        started = time.perf_counter()
        result = fit(model, train, val, cell.train, seed=seed, checkpoint=spec.file(".pt"), on_epoch=record_epoch,
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
        }
        per_class = {f"test_acc_{name}": acc for name, acc in zip(CLASSES, tested.per_class_accuracy)}
        fast_paths = result.fast_paths | {"threads": torch.get_num_threads()}
        log.log_final({k: v for k, v in summary.items() if isinstance(v, (int, float)) and v == v} | per_class,
                      {"status": result.status, **where, **{f"fast.{k}": str(v) for k, v in fast_paths.items()}})
        confusion = spec.file("-confusion.json")
        write_json_atomic(confusion, {"classes": list(CLASSES), "confusion": tested.confusion})
        log.log_artifact(confusion)
        with atomic_path(spec.models_dir / f"seed{seed}.pt") as tmp:
            torch.save(model.state_dict(), tmp)
        log.mark_current()
    history = [{"seed": seed, **{k: r[k] for k in HISTORY_FIELDS[1:]}} for r in result.history]
    out = {"summary": summary | {"run_id": log.run_id, "fast_paths": fast_paths}, "history": history}
    write_json_atomic(done, out)
    return out


def placement() -> dict[str, str]:
    """Where this attempt of a run ran: host, Ray node id ('local' outside Ray) and the GPUs it was given.
    Set when the run starts and again when it ends: a run retried on another node names where it finished."""
    worker = "local"
    if "ray" in sys.modules:  # never import Ray (0.5 s) in a local worker
        import ray

        if ray.is_initialized():
            worker = ray.get_runtime_context().get_node_id()
    return {"host": socket.gethostname(), "worker": worker,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else 0.0
