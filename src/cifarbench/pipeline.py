"""What the DVC stages do, one function each, and where their files live.

    runs/<preset>/plan/<arch>/<ablation>.json          plan: the cell's slice of params.yaml
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
from cifarbench.engine.fast import check_device
from cifarbench.errors import ConfigError
from cifarbench.io import read_json, write_json_atomic
from cifarbench.plan import Cell, all_cells, cell_params, load_plan, read_tuned, resolve_cell
from cifarbench.tracking import provenance

RUNS = Path("runs")


def cell_dir(preset: str, arch: str, ablation: str) -> Path:
    return RUNS / preset / "cells" / arch / ablation


def tuned_path(preset: str, arch: str) -> Path:
    return RUNS / preset / "tuned" / f"{arch}.json"


def cell_params_path(preset: str, arch: str, ablation: str) -> Path:
    return RUNS / preset / "plan" / arch / f"{ablation}.json"


def plan_stage(tree: dict) -> list[Cell]:
    """Validate every cell of the preset (bad params fail here, before any training), then write each
    cell's slice of params.yaml for its train stage."""
    plan = load_plan(tree)
    cells = all_cells(plan)
    for device in sorted({c.train.device for c in cells}):
        check_device(device)  # `cuda:99` fails here, not in the first cell's training
    for cell in cells:
        write_json_atomic(cell_params_path(plan.preset, cell.arch, cell.ablation),
                          cell_params(plan, cell.arch, cell.ablation))
    skipped = sum(c.not_applicable is not None for c in cells)
    print(f"plan ({plan.preset}): {len(cells)} cells, {len(plan.architectures)} architectures x "
          f"{len(plan.ablations)} ablations ({skipped} not applicable before tuning)")
    return cells


def train_stage(tree: dict, arch: str, ablation: str) -> dict:
    """Train and test one cell (all its seeds). `tree` is params.yaml; the cell's config comes from its
    slice written by the plan stage, the tuned values from the tune stage."""
    from cifarbench.runner import run_cell

    preset = tree.get("preset")
    path = cell_params_path(preset, arch, ablation)
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {arch}/{ablation} in params.yaml `architectures` x `ablations`? "
                          f"`dvc repro` runs the plan stage that writes it")
    plan = load_plan(read_json(path))
    tracking = parse_section(TrackingConfig, tree.get("tracking"), "tracking")
    cell = resolve_cell(plan, arch, ablation, read_tuned(tuned_path(plan.preset, arch)))
    names = [(a, b) for a in tree.get("architectures", {}) for b in tree.get("ablations", {})]
    index = names.index((arch, ablation)) + 1 if (arch, ablation) in names else "?"
    print(_headline(cell, index, len(names)), flush=True)
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


def plan_main(argv: list[str]) -> int:
    """`stages/plan.py` (run in the warm worker, see cifarbench.worker)."""
    from cifarbench.cli import run_reporting_errors
    from cifarbench.config import load_params

    return run_reporting_errors(lambda: plan_stage(load_params()) and None)


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


def _headline(cell: Cell, index: int | str, total: int) -> str:
    what = f"not applicable: {cell.not_applicable}" if cell.not_applicable else (
        f"{len(cell.seeds)} seed(s) x {cell.train.epochs} epochs, width {cell.model.width}")
    return f"[cell {index}/{total}] {cell.name} ({cell.group}, preset {cell.preset}): {what}"


def _result_line(cell: Cell, metrics: dict) -> str:
    if metrics["status"] == "not_applicable":
        return f"{cell.name}: skipped ({metrics['reason']})"
    mean, std = metrics["test_acc_mean"], metrics["test_acc_std"]
    acc = "n/a" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"
    return f"{cell.name}: test accuracy {acc} over {metrics['n_seeds']} seed(s), status {metrics['status']}"
