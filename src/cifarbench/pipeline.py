"""What the DVC stages do, one function each, and where their files live.

    runs/<preset>/tuned/<arch>.json                    tune: best lr / weight decay
    runs/<preset>/cells/<arch>/<ablation>/             train: metrics.json, history.csv, models/
    runs/checkpoints/<preset>/<arch>/<ablation>/       resumable checkpoints of an unfinished cell
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from cifarbench.config import TrackingConfig, parse_section
from cifarbench.data.commands import PREPARED
from cifarbench.io import read_json
from cifarbench.plan import Cell, all_cells, load_plan, read_tuned, resolve_cell
from cifarbench.tracking import provenance

RUNS = Path("runs")


def cell_dir(preset: str, arch: str, ablation: str) -> Path:
    return RUNS / preset / "cells" / arch / ablation


def tuned_path(preset: str, arch: str) -> Path:
    return RUNS / preset / "tuned" / f"{arch}.json"


def train_stage(tree: dict, arch: str, ablation: str) -> dict:
    """Validate the whole plan, then train and test one cell (all its seeds)."""
    from cifarbench.runner import run_cell

    plan = load_plan(tree)
    tracking = parse_section(TrackingConfig, tree.get("tracking"), "tracking")
    cells = all_cells(plan)  # every cell validated before any training: bad params fail here
    cell = resolve_cell(plan, arch, ablation, read_tuned(tuned_path(plan.preset, arch)))
    index = [c.name for c in cells].index(cell.name) + 1
    print(_headline(cell, index, len(cells)), flush=True)
    data_info = read_json(PREPARED / "info.json")
    tags = {**provenance(), "data_md5": data_info["archive_md5"]}
    bar = tqdm(total=cell.train.epochs * len(cell.seeds), unit="epoch", desc=cell.name, file=sys.stdout,
               disable=cell.not_applicable is not None)

    def progress(seed: int, record: dict) -> None:
        bar.set_postfix(seed=seed, val_acc=f"{record['val_acc']:.3f}", refresh=False)
        bar.update()

    with bar:
        metrics = run_cell(cell, prepared=PREPARED, out_dir=cell_dir(plan.preset, arch, ablation),
                           work_dir=RUNS / "checkpoints" / plan.preset / arch / ablation,
                           tracking=tracking, tags=tags, on_epoch=progress)
    print(_result_line(cell, metrics), flush=True)
    return metrics


def train_main(argv: list[str]) -> int:
    """`stages/train.py --arch A --ablation B` (run in the warm worker, see cifarbench.worker)."""
    import argparse

    from cifarbench.cli import run_reporting_errors
    from cifarbench.config import load_params

    parser = argparse.ArgumentParser(prog="stages/train.py", description="train and test one benchmark cell")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--ablation", required=True)
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: train_stage(load_params(), args.arch, args.ablation) and None)


def _headline(cell: Cell, index: int, total: int) -> str:
    what = f"not applicable: {cell.not_applicable}" if cell.not_applicable else (
        f"{len(cell.seeds)} seed(s) x {cell.train.epochs} epochs, width {cell.model.width}")
    return f"[cell {index}/{total}] {cell.name} ({cell.group}, preset {cell.preset}): {what}"


def _result_line(cell: Cell, metrics: dict) -> str:
    if metrics["status"] == "not_applicable":
        return f"{cell.name}: skipped ({metrics['reason']})"
    mean, std = metrics["test_acc_mean"], metrics["test_acc_std"]
    acc = "n/a" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"
    return f"{cell.name}: test accuracy {acc} over {metrics['n_seeds']} seed(s), status {metrics['status']}"
