"""Running one benchmark cell: every seed of one (architecture, ablation), trained on the training split,
checked per epoch on the validation split, then evaluated once on the test set, tracked in MLflow.

Outputs in `out_dir` (the DVC outs of `train@<arch>-<ablation>`):
    metrics.json        per-seed and mean/std test accuracy, status, timing (for `dvc metrics`)
    history.csv         one row per (seed, epoch)
    curve.csv           the learning curve averaged over seeds, one row per epoch (for `dvc plots`)
    models/seed<k>.pt   final weights (state_dict)
Checkpoints for resuming a killed run live in `work_dir/<config hash>/` (not a DVC output, so a rerun
after a kill resumes instead of starting over) and are removed once the cell is complete.
On a CPU with fewer than two cores per seed, the seeds train side by side in forked 1-thread processes
(cifarbench.forked); each run records its torch thread count (tag `fast.threads`), which its numbers
depend on at the last bit.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cifarbench.data import CLASSES, Split, load_split
from cifarbench.engine import EpochRecord, evaluate, fit
from cifarbench.engine.fast import resolve_device
from cifarbench.forked import map_forked, side_by_side
from cifarbench.io import atomic_path, write_json_atomic
from cifarbench.models import build_model_from
from cifarbench.models.profile import count_parameters, flops_per_image
from cifarbench.plan import Cell
from cifarbench.tracking import training_run

HISTORY_FIELDS = ["seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]
CURVE_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]


def load_data(prepared: Path, cell: Cell) -> tuple[Split, Split, Split]:
    b = cell.budget
    return (load_split(prepared, "train", b.train_subset), load_split(prepared, "val", b.val_subset),
            load_split(prepared, "test", b.test_subset))


def run_cell(cell: Cell, *, prepared: Path, out_dir: Path, work_dir: Path, tracking, tags: dict[str, str],
             on_epoch: Callable[[int, dict], None] = lambda seed, record: None) -> dict:
    """Train and test every seed of `cell`; returns the metrics also written to out_dir/metrics.json."""
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    if cell.not_applicable:
        return _write_outputs(out_dir, {"status": "not_applicable", "reason": cell.not_applicable}, [])
    train, val, test = load_data(prepared, cell)
    ckpt_dir = work_dir / cell.config_hash()
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    def one_seed(seed: int, report: Callable[[dict | None], None]) -> tuple[dict, list[dict]]:
        return _run_seed(cell, seed, train, val, test, ckpt_dir, out_dir, tracking, tags, report)

    def on_report(seed: int, record: dict | None) -> None:
        if record is not None:  # None: the seed's MLflow run is open
            on_epoch(seed, record)

    on_cpu = resolve_device(cell.train.device).type == "cpu"
    processes = side_by_side(cell.seeds) if on_cpu else 1
    done = map_forked(one_seed, cell.seeds, processes=processes, on_report=on_report)
    per_seed = {seed: summary for seed, (summary, _) in zip(cell.seeds, done)}
    history = [row for _, rows in done for row in rows]
    metrics = summarize(per_seed)
    result = _write_outputs(out_dir, metrics, history)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return result


def _run_seed(cell, seed, train, val, test, ckpt_dir, out_dir, tracking, tags, report):
    torch.manual_seed(seed)
    model = build_model_from(cell.model)
    run_id_file = ckpt_dir / f"seed{seed}.mlflow-run"
    resume = run_id_file.read_text().strip() if run_id_file.is_file() else None
    identity = {**tags, "preset": cell.preset, "arch": cell.arch, "ablation": cell.ablation, "seed": str(seed)}
    run_tags = {**identity, "ablation_group": cell.group, "config_hash": cell.config_hash()}
    params = {**cell.config(), "seed": seed}
    with training_run(tracking, name=f"{cell.name}/seed{seed}", tags=run_tags, params=params,
                      resume_run_id=resume) as log:
        run_id_file.write_text(log.run_id)
        report(None)

        def record_epoch(record: EpochRecord) -> None:
            row = dataclasses.asdict(record)
            log.log_epoch(row, record.epoch)
            report(row)

        started = time.perf_counter()
        result = fit(model, train, val, cell.train, seed=seed, checkpoint=ckpt_dir / f"seed{seed}.pt",
                     on_epoch=record_epoch)
        tested = evaluate(model, test, batch_size=cell.train.eval_batch_size, fast=cell.train.fast)
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
                      {"status": result.status, **{f"fast.{k}": str(v) for k, v in fast_paths.items()}})
        write_json_atomic(ckpt_dir / f"seed{seed}-confusion.json", {"classes": list(CLASSES), "confusion": tested.confusion})
        log.log_artifact(ckpt_dir / f"seed{seed}-confusion.json")
        with atomic_path(out_dir / "models" / f"seed{seed}.pt") as tmp:
            torch.save(model.state_dict(), tmp)
        log.mark_current(identity)
    rows = [{"seed": seed, **{k: r[k] for k in HISTORY_FIELDS[1:]}} for r in result.history]
    return summary | {"run_id": log.run_id, "fast_paths": fast_paths}, rows


def summarize(per_seed: dict[int, dict]) -> dict:
    """Mean and spread over seeds of the test accuracy, plus each seed's own record."""
    accs = [s["test_acc"] for s in per_seed.values() if s["status"] != "diverged"]
    statuses = {s["status"] for s in per_seed.values()}
    return {
        "status": "diverged" if statuses == {"diverged"} else "completed",
        "test_acc_mean": statistics.fmean(accs) if accs else None,
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
        "n_seeds": len(accs),
        "train_seconds": sum(s["train_seconds"] for s in per_seed.values()),
        "seeds": {str(k): v for k, v in per_seed.items()},
    }


def mean_curve(history: list[dict]) -> list[dict]:
    """Per epoch, the mean over the seeds that reached it (early stopping ends seeds at different epochs)."""
    by_epoch: dict[int, list[dict]] = {}
    for row in history:
        by_epoch.setdefault(row["epoch"], []).append(row)
    return [{"epoch": e, **{k: statistics.fmean(r[k] for r in rows) for k in CURVE_FIELDS[1:]}}
            for e, rows in sorted(by_epoch.items())]


def _write_outputs(out_dir: Path, metrics: dict, history: list[dict]) -> dict:
    _write_csv(out_dir / "history.csv", HISTORY_FIELDS, history)
    _write_csv(out_dir / "curve.csv", CURVE_FIELDS, mean_curve(history))
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
