"""The train stage: every cell of the matrix, its runs fanned out over an executor (cifarbench.execute).
Its files (runs/<preset>/cells, metrics, curves, checkpoints) are named by cifarbench.paths.

One DVC stage trains the whole matrix; its outputs persist between runs (`persist: true`), and a cell is
trained only when its result.json does not carry the cell's current key: a hash of everything that
decides its numbers (its config after tuning, the seeds, the data split, the training code). So editing one
ablation retrains exactly that ablation's cells, and a stage killed halfway trains only what is missing
when rerun (finished seeds of an unfinished cell are kept too). Why one stage and not one per cell: DVC
rewrites the whole dvc.lock after every stage and runs stages one at a time; one stage fanning its ~200
runs out over every core, GPU and machine replaces ~100 stages of ~2.4 s overhead each.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from cifarbench import fastpaths
from cifarbench.codeclosure import training_code_digest  # also what tuning's study names hash
from cifarbench.config import DataConfig, TrackingConfig
from cifarbench.engine.fast import check_device
from cifarbench.errors import CifarbenchError
from cifarbench.execute import Executor, ExecutorConfig, running
from cifarbench.io import DamagedFile, atomic_path, read_checked_json, read_json, write_json_atomic
from cifarbench.paths import PREPARED, cell_dir, checkpoint_dir, curve_path, metrics_path, runs_of
from cifarbench.plan import BASELINE, Cell, PlanConfig, all_cells, read_tuned_values
from cifarbench.progress import Progress
from cifarbench.runner import HISTORY_FIELDS, RunSpec, train_run
from cifarbench.tracking import Tracker, provenance
from cifarbench.tracking import tags as t

CURVE_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
FINISHED = ("completed", "diverged", "not_applicable")
METRICS = ("test_acc_mean", "test_acc_std", "n_seeds", "did_not_train", "train_seconds")  # a cell's line in `dvc metrics show`


def data_identity(prepared: Path = PREPARED) -> dict:
    """What the prepared splits are: the archive and the split's seed and size (from info.json)."""
    info = read_json(prepared / "info.json")
    return {"archive_md5": info["archive_md5"], "val_size": info.get("val_size"), "seed": info.get("seed")}


def cell_key(cell: Cell, data: dict) -> str:
    """The hash a finished cell is recorded under: config, seeds, data split and training code."""
    what = {"config": cell.config(), "seeds": cell.seeds, "data": data, "code": training_code_digest()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def checked_cells(plan, tuned: dict | None = None) -> list[Cell]:
    """Every cell, validated, on devices this machine has: bad params fail here, before any training."""
    cells = all_cells(plan, tuned)
    for device in sorted({c.train.device for c in cells}):
        check_device(device)  # `cuda:99` fails here, not in the first run's worker
    return cells


def train_stage(plan: PlanConfig, tracking: TrackingConfig, executor: ExecutorConfig, source: DataConfig,
                prune: bool = False) -> dict:
    """Train and test every cell of the preset that is not already finished under its current key (`source`:
    the params' data section, whose URL each MLflow run names as its datasets' source); returns
    {"cells": planned, "trained": newly finished, "runs": runs trained}. Raises naming the failed runs.
    Outputs of cells the plan no longer has are kept (the report leaves them out), or removed with `prune`."""
    cells = checked_cells(plan, read_tuned_values(plan))
    data = data_identity()
    stale = _stale_outputs(plan.preset, cells)
    if stale and prune:
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"train: removed the outputs of {len(stale)} cell file(s) no longer in the plan (--prune)", flush=True)
    elif stale:
        print(f"train: kept the outputs of {len(stale)} cell file(s) no longer in the plan (the report leaves them "
              "out; `cifarbench train --prune` removes them)", flush=True)
    todo = {}
    for cell in cells:
        key = cell_key(cell, data)
        if (finished := _finished(cell)) is not None and finished["key"] == key:
            _check_metrics_file(cell, finished)
            continue
        if cell.not_applicable:
            _write_cell(cell, key, {"status": "not_applicable", "reason": cell.not_applicable}, [])
        else:
            todo[cell.name] = (cell, key)
    print(f"train ({plan.preset}): {len(cells)} cells, {len(todo)} to train", flush=True)
    if not todo:
        return {"cells": len(cells), "trained": 0, "runs": 0}
    gpu = any(c.train.device != "cpu" for c, _ in todo.values())
    with running(executor, gpu=gpu) as pool:
        pool.warm()
        fast = _measured_fast_paths([c for c, _ in todo.values()], pool)
        cost = measured_cost(cells, fast)
        runs = _specs([c for c, _ in todo.values()], {n: k for n, (_, k) in todo.items()},
                      Tracker.open(tracking), data, fast, source.url, cost)
        results, failed = _execute(runs, pool, cost, on_cell=lambda name, done: _finish_cell(*todo[name], done))
    if failed:
        raise CifarbenchError(f"{len(failed)} run(s) failed; the other runs finished and are kept, `dvc repro` "
                              "trains only what is missing:\n" + "\n".join(f"- {n}: {e}" for n, e in failed.items()))
    return {"cells": len(cells), "trained": len(todo), "runs": len(runs)}


def _measured_fast_paths(cells: list[Cell], executor: Executor) -> dict[str, dict]:
    """Per architecture, the CPU fast paths measured for its baseline model (cifarbench.fastpaths), when
    the runs train here on a CPU with fast paths on; {} otherwise (GPUs and Ray nodes keep the rule by
    device: a Ray node's CPU is not this one)."""
    from cifarbench.engine.fast import resolve_device

    cpu = [c for c in cells if c.train.fast and resolve_device(c.train.device).type == "cpu"]
    if executor.kind != "local" or not cpu:
        return {}
    models = {c.arch: (c.model.model_dump(exclude={"norm", "pooling", "dropout"}), c.train.batch_size) for c in cpu}
    return fastpaths.choose(models, executor.threads, parallel=executor.slots)


def _specs(cells: list[Cell], keys: dict[str, str], tracker: Tracker, data: dict,
           fast: dict[str, dict], data_url: str, cost: Callable[[Cell], float]) -> list[RunSpec]:
    """The runs still to do, longest first by `cost` (the matrix ends sooner when its longest runs start first)."""
    tags = {**provenance(), t.DATA_MD5: data["archive_md5"]}
    specs = []
    for cell in cells:
        work = checkpoint_dir(cell.preset, cell.arch, cell.ablation, keys[cell.name]).resolve()
        work.mkdir(parents=True, exist_ok=True)
        models = cell_dir(cell.preset, cell.arch, cell.ablation).resolve() / "models"
        models.mkdir(parents=True, exist_ok=True)
        measured = fast.get(cell.arch) if cell.train.fast else None
        cpu_paths = fastpaths.CANDIDATES[measured["choice"]] if measured else None
        extra = {f"{t.FAST}measured": fastpaths.describe(measured)} if measured else {}
        for seed in cell.seeds:
            identity = t.run_identity(cell.preset, cell.arch, cell.ablation, seed)
            specs.append(RunSpec(cell, seed, PREPARED.resolve(), work, models, tracker,
                                 {**tags, **identity, **extra, t.ABLATION_GROUP: cell.group,
                                  t.CONFIG_HASH: cell.config_hash(), t.CELL_KEY: keys[cell.name]}, cpu_paths,
                                 data_url))
    return sorted(specs, key=lambda spec: cost(spec.cell), reverse=True)


def cell_cost(cell: Cell) -> float:
    """The rough cost of one run of `cell` (a tuning trial's too): epochs x images x (FLOPs per image + 1e6 per
    layer, the cost of the many small memory-bound ops that make GoogLeNet and DenseNet slower than their
    FLOPs say). Orders the runs, and scales the elapsed time into the time left (cifarbench.progress)."""
    images = cell.budget.train_subset or 45_000
    return cell.train.epochs * images * _model_term(cell.model)


def measured_cost(cells: list[Cell], fast: dict[str, dict]) -> Callable[[Cell], float]:
    """A run's cost in seconds where the fast-path probe timed its architecture's baseline model on this CPU
    (`fast`: {arch: fastpaths entry}): its epochs x images over the images/s measured for the path it trains
    with, scaled by cell_cost's model term where the cell's model differs (no_bn, another width); cell_cost
    elsewhere. The narrow models' per-op overhead, which no FLOP count sees, is then in the time left."""
    base = {c.arch: _model_term(c.model) for c in cells if c.ablation == BASELINE}
    per_image = {arch: 1.0 / speed for arch, entry in fast.items()
                 if arch in base and (speed := entry["measured"].get(entry["choice"]))}
    if not base or set(per_image) != set(base):  # one unit for every run, or the order and the time left mix two
        return cell_cost

    def cost(cell: Cell) -> float:
        images = cell.budget.train_subset or 45_000
        return cell.train.epochs * images * per_image[cell.arch] * _model_term(cell.model) / base[cell.arch]
    return cost


def _model_term(model_cfg) -> float:
    flops, layers = _model_cost(model_cfg)
    return flops + 1e6 * layers


@functools.lru_cache(maxsize=None)
def _model_cost(model_cfg) -> tuple[int, int]:
    from cifarbench.models import build_model_from
    from cifarbench.models.profile import flops_per_image

    model = build_model_from(model_cfg)
    return flops_per_image(model), sum(1 for m in model.modules() if not list(m.children()))


def _execute(runs: list[RunSpec], executor: Executor, cost: Callable[[Cell], float], on_cell) -> tuple[dict, dict]:
    """Run `runs` on the executor; `on_cell(name, {seed: result})` once all seeds of a cell are done.
    Returns (results by run name, errors by run name). Ctrl-C: every worker stopped, their MLflow runs
    ended KILLED, checkpoints kept."""
    left = {}
    for spec in runs:
        left.setdefault(spec.cell.name, set()).add(spec.seed)
    by_name, results, failed = {s.name: s for s in runs}, {}, {}
    progress = Progress([cost(s.cell) for s in runs])
    print(f"train: {len(runs)} run(s) on {executor.where}", flush=True)
    try:
        for spec in runs:
            executor.submit(spec.name, train_run, spec)
        while executor.pending():
            done = executor.next_done()
            spec = by_name[done.key]
            where = progress.finished(cost(spec.cell))
            if not done.ok:
                failed[done.key] = done.error
                print(f"train {where} {done.key} FAILED:\n{done.error}", file=sys.stderr, flush=True)
                continue
            results[done.key] = done.result
            _print_run(where, spec, done.result)
            left[spec.cell.name].discard(spec.seed)
            if not left[spec.cell.name]:
                on_cell(spec.cell.name, {s.seed: results[s.name] for s in runs if s.cell.name == spec.cell.name})
    except BaseException:
        executor.close()
        in_flight = [by_name[n] for n in by_name if n not in results and n not in failed]
        ids = [s.file(".mlflow-run").read_text().strip() for s in in_flight if s.file(".mlflow-run").is_file()]
        runs[0].tracker.end_killed(ids, [s.tags for s in in_flight])
        raise
    return results, failed


def _print_run(where: str, spec: RunSpec, result: dict) -> None:
    s = result["summary"]
    untrained = f", DID NOT TRAIN ({s['did_not_train']})" if s.get("did_not_train") else ""
    print(f"{where} {spec.name}: test {100 * s['test_acc']:.2f} %, {s['status']}{untrained}, "
          f"{s['wall_seconds']:.0f} s", flush=True)


def _finish_cell(cell: Cell, key: str, done: dict[int, dict]) -> None:
    per_seed = {seed: done[seed]["summary"] for seed in cell.seeds}
    history = [row for seed in cell.seeds for row in done[seed]["history"]]
    _write_cell(cell, key, summarize(per_seed), history)
    shutil.rmtree(checkpoint_dir(cell.preset, cell.arch, cell.ablation, key), ignore_errors=True)


def summarize(per_seed: dict[int, dict]) -> dict:
    """Mean and spread over seeds of the test accuracy, plus each seed's own record."""
    trained = [s for s in per_seed.values() if s["status"] != "diverged" and not s.get("did_not_train")]
    accs = [s["test_acc"] for s in trained]
    statuses = {s["status"] for s in per_seed.values()}
    return {
        "status": "diverged" if statuses == {"diverged"} else "completed",
        "test_acc_mean": statistics.fmean(accs) if accs else None,
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
        "n_seeds": len(accs),  # seeds that trained: a run that did not train is never averaged
        "did_not_train": len(per_seed) - len(trained),
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


def _write_cell(cell: Cell, key: str, result: dict, history: list[dict]) -> None:
    """The cell's outputs; result.json last: its key marks the cell finished."""
    folder = cell_dir(cell.preset, cell.arch, cell.ablation)
    if cell.not_applicable:
        shutil.rmtree(folder / "models", ignore_errors=True)
    _write_csv(folder / "history.csv", HISTORY_FIELDS, history)
    _write_csv(curve_path(cell.preset, cell.arch, cell.ablation), CURVE_FIELDS, mean_curve(history))
    _write_metrics(cell, result)
    write_json_atomic(folder / "result.json", {"key": key, **result})


def _write_metrics(cell: Cell, result: dict) -> None:
    metrics = {k: result[k] for k in METRICS if k in result}
    write_json_atomic(metrics_path(cell.preset, cell.arch, cell.ablation), {"status": result["status"], **metrics})


def _finished(cell: Cell) -> dict | None:
    """The cell's result.json if it marks the cell finished (a key and a finished status), else None. A
    damaged one is named in a warning and the cell trains again (its seeds' MLflow runs are replaced)."""
    path = cell_dir(cell.preset, cell.arch, cell.ablation) / "result.json"
    try:
        result = read_checked_json(path, _why_bad_result)
    except FileNotFoundError:
        return None
    except (OSError, DamagedFile) as exc:
        print(f"warning: {exc}: cell {cell.name} trains again", file=sys.stderr, flush=True)
        return None
    return result if result.get("status") in FINISHED else None


def _why_bad_result(result: dict) -> str | None:
    if not isinstance(result.get("key"), str) or not isinstance(result.get("status"), str):
        return "has no key and status"
    return None


def _check_metrics_file(cell: Cell, result: dict) -> None:
    """A finished cell's metrics file (what `dvc metrics show` reads) damaged: written again from result.json."""
    path = metrics_path(cell.preset, cell.arch, cell.ablation)
    try:
        read_checked_json(path, lambda m: None if isinstance(m.get("status"), str) else "has no status")
    except (OSError, DamagedFile) as exc:
        why = "is missing" if isinstance(exc, FileNotFoundError) else str(exc).removeprefix(f"{path} ")
        print(f"warning: {path} {why}: written again from the cell's result.json", file=sys.stderr, flush=True)
        _write_metrics(cell, result)


def _stale_outputs(preset: str, cells: list[Cell]) -> list[Path]:
    """Outputs of cells the plan no longer has (an ablation or architecture removed from params.yaml): a
    finished result is never thrown away by a trimmed plan, only on purpose (`--prune`)."""
    planned = {(c.arch, c.ablation) for c in cells}
    return [path for kind, suffix in (("cells", ""), ("metrics", ".json"), ("curves", ".csv"))
            for path in sorted(runs_of(preset, kind).glob(f"*/*{suffix}"))
            if (path.parent.name, path.name.removesuffix(suffix)) not in planned]


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
