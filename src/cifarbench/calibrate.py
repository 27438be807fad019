"""What `cifarbench calibrate` (cifarbench.commands.calibrate) does: choose a budget on validation accuracy, never on test, and keep the evidence.

A budget choice (epochs, width, lr, a recipe) is made by training the candidates on the training split and
comparing their accuracy on the validation split; this command does exactly that and nothing else: it never
opens a test file. Each candidate is a set of dotted changes to one architecture's budget in the current
preset (what `architectures.<arch>.presets.<preset>` would say), applied under every ablation asked for, for
every seed asked for. It prints, per candidate, the validation accuracy of each ablation and what each
ablation's technique buys on validation (params.yaml `buys`, paired by seed), and writes all of it with the
command line, commit and CPU to a JSON file that is committed beside the choice (docs/calibration/).

    cifarbench calibrate --arch googlenet --candidate train.epochs=16 --candidate train.epochs=24 \\
        --ablation aug_none --ablation no_reg --seeds 0 1 2 --out docs/calibration/googlenet-epochs.json

The runs use the recipe's lr and weight decay layered as for the cells (no tuned values: a budget is chosen
before tuning), on the executor of params.yaml; they are not benchmark runs and are not logged to MLflow.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from cifarbench.config import read_yaml
from cifarbench.errors import CifarbenchError, ConfigError
from cifarbench.execute import ExecutorConfig, running
from cifarbench.paths import PREPARED
from cifarbench.plan import BASELINE, ArchitectureBudget, Cell, PlanConfig, deep_merge, resolve_cell
from cifarbench.runner import train_one, training_data


@dataclasses.dataclass(frozen=True)
class CalibrationRun:
    candidate: int
    cell: Cell
    seed: int
    prepared: Path


def calibration_run(run: CalibrationRun) -> dict:
    """Train one (candidate, ablation, seed) on train, check it on validation; test is never loaded."""
    result, _ = train_one(run.cell, run.seed, training_data(run.prepared, run.cell.budget, run.seed))
    last = result.history[-1] if result.history else {}
    return {"final_val_acc": last.get("val_acc"), "best_val_acc": result.best_val_acc,
            "final_train_acc": last.get("train_acc"), "epochs": result.stopped_epoch, "status": result.status,
            "seconds": result.seconds}


def parse_candidate(text: str) -> dict:
    """'train.epochs=24,model.width=0.125' -> {'train': {'epochs': 24}, 'model': {'width': 0.125}}."""
    tree: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        path = key.strip().split(".")
        if not sep or path[0] not in ("model", "train") or len(path) < 2:
            raise ConfigError(f"--candidate {text!r}: each change is model.KEY=VALUE or train.KEY=VALUE "
                              "(e.g. train.epochs=24,train.optimizer.lr=0.05)")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = read_yaml(value)
    return tree


def candidate_plan(plan: PlanConfig, arch: str, changes: dict) -> PlanConfig:
    """The plan with `changes` layered over the architecture's budget in the current preset."""
    spec = plan.architectures[arch]
    budget = spec.presets.get(plan.preset, ArchitectureBudget())
    merged = deep_merge({"model": budget.model, "train": budget.train}, changes)
    budget = budget.model_copy(update={"model": merged["model"], "train": merged["train"], "ablations": None})
    spec = spec.model_copy(update={"presets": {**spec.presets, plan.preset: budget}})
    return plan.model_copy(update={"architectures": {**plan.architectures, arch: spec}})


def calibrate(plan: PlanConfig, executor: ExecutorConfig, arch: str, candidates: list[str], ablations: list[str],
              seeds: list[int], prepared: Path = PREPARED) -> dict:
    """Every (candidate, ablation, seed) on the executor; returns the results and their summary."""
    if arch not in plan.architectures:
        raise ConfigError(f"--arch {arch!r} is not in params.yaml `architectures`: {', '.join(plan.architectures)}")
    ablations = [BASELINE] + [a for a in ablations if a != BASELINE]
    runs = []
    for index, text in enumerate(candidates):
        cand = candidate_plan(plan, arch, parse_candidate(text))
        for ablation in ablations:
            cell = resolve_cell(cand, arch, ablation)
            runs += [CalibrationRun(index, cell, seed, prepared.resolve()) for seed in seeds]
    results = _execute(runs, executor)
    out = {"arch": arch, "preset": plan.preset, "seeds": seeds, "ablations": ablations, "candidates": []}
    for index, text in enumerate(candidates):
        mine = {(r.cell.ablation, r.seed): results[i] for i, r in enumerate(runs) if r.candidate == index}
        out["candidates"].append({"changes": text, "runs": [{"ablation": a, "seed": s, **v} for (a, s), v in mine.items()],
                                  "val_acc": _means(mine, ablations, seeds), "buys": _buys(plan, mine, ablations, seeds)})
    return out


def _execute(runs: list[CalibrationRun], cfg: ExecutorConfig) -> dict[int, dict]:
    results, failed = {}, []
    with running(cfg, gpu=any(r.cell.train.device != "cpu" for r in runs)) as executor:
        print(f"calibrate: {len(runs)} runs on {executor.where}", flush=True)
        queue = list(enumerate(runs))
        while queue or executor.pending():
            while queue and executor.pending() < executor.slots:
                i, run = queue.pop(0)
                executor.submit(i, calibration_run, run)
            done = executor.next_done()
            if done.ok:
                results[done.key] = done.result
                r = runs[done.key]
                print(f"  [{len(results)}/{len(runs)}] candidate {r.candidate} {r.cell.ablation} seed {r.seed}: "
                      f"val {100 * done.result['final_val_acc']:.2f} %", flush=True)
            else:
                failed.append(f"run {done.key}: {done.error}")
    if failed:
        raise CifarbenchError(f"{len(failed)} calibration run(s) failed:\n" + "\n".join(failed))
    return results


def _means(runs: dict, ablations: list[str], seeds: list[int]) -> dict[str, float]:
    return {a: statistics.fmean(runs[(a, s)]["final_val_acc"] for s in seeds) for a in ablations}


def _buys(plan: PlanConfig, runs: dict, ablations: list[str], seeds: list[int]) -> dict[str, dict]:
    """What each asked ablation's technique buys on validation: acc(with) - acc(without), paired by seed."""
    out = {}
    for ablation in ablations:
        buys = plan.ablations[ablation].buys
        if buys is None or not {buys.with_, buys.without} <= set(ablations):
            continue
        diffs = [runs[(buys.with_, s)]["final_val_acc"] - runs[(buys.without, s)]["final_val_acc"] for s in seeds]
        out[buys.technique] = {"mean": statistics.fmean(diffs), "sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
                               "n": len(diffs)}
    return out


def print_summary(out: dict) -> None:
    print(f"\nvalidation accuracy, %, mean of seeds {out['seeds']} ({out['arch']}, preset {out['preset']}):")
    for cand in out["candidates"]:
        accs = ", ".join(f"{a} {100 * v:.2f}" for a, v in cand["val_acc"].items())
        buys = ", ".join(f"{t} {100 * b['mean']:+.2f}" for t, b in cand["buys"].items())
        print(f"  {cand['changes'] or '(the preset as it is)'}: {accs}" + (f"; buys on validation: {buys}" if buys else ""))
