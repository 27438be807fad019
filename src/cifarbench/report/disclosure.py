"""The report's first section: what was trained, before any number is read.

Per architecture, its baseline cell as the preset trains it: the model (width, parameters, stem,
normalization and dropout beside the paper's) and the training (optimizer, lr and weight decay with where each value came
from, schedule, epochs, batch); the data in words; one sentence on what such a benchmark can say; and which
side of each comparison carries the tuned values. Everything is read from the plan (the cells' configs), the
model registry and the tuned values, so the text cannot drift from what ran.
"""

from __future__ import annotations

import functools
from collections import Counter

import pandas as pd
import torch.nn as nn

from cifarbench.models import ModelConfig, build_model_from, model_info
from cifarbench.models.paper import paper_facts
from cifarbench.models.profile import count_parameters
from cifarbench.plan import (
    BASELINE, AblationSpec, Budget, Cell, PlanConfig, Tuned, all_cells, resolve_cell, tuned_key, tuned_values,
)
from cifarbench.report.render import Bullets, Section, Strong, Table

OFFICIAL_TEST = 10_000  # images in CIFAR-10's official test batch
TUNED, OWN_STUDY, RECIPE, ABLATION = "tuned", "tuned (own study)", "recipe", "ablation"
ORIGINS = {
    TUNED: "tuned = Optuna's best for the architecture's baseline cell, searched on validation images",
    OWN_STUDY: "tuned (own study) = Optuna's best for this ablation's own cell, searched the same way (`tune: own`, "
               "e.g. no_bn: an lr tuned with batch norm is often far too high without it; sgd, adam, adamw: each optimizer at "
               "its own lr)",
    RECIPE: "recipe = params.yaml's hand-set value (the recipe, or this architecture's or preset's override of it)",
    ABLATION: "ablation = set by the ablation itself (e.g. no_l2's weight decay 0)",
}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def value_origin(key: str, ablation: AblationSpec, tuned: dict | None) -> str:
    """Where a cell's optimizer value `key` ("lr" or "weight_decay") comes from, by plan.tuned_values' rule:
    the ablation's own value, else the tuned one where the preset tuned it (by the ablation's own study for
    `tune: own`), else the hand-set recipe's. `tuned`: the values of the study the cell takes (plan.tuned_key)."""
    if key in tuned_values(ablation, tuned):
        return OWN_STUDY if ablation.tune == "own" else TUNED
    own = ablation.train.get("optimizer")
    return ABLATION if isinstance(own, dict) and key in own else RECIPE  # sgd without `tune: own` keeps the hand-set lr


def cell_origin(key: str, plan: PlanConfig, tuned: Tuned, arch: str, ablation: str) -> str:
    """value_origin for cell (arch, ablation), given every study's values (plan.read_tuned_values)."""
    return value_origin(key, plan.ablations[ablation], tuned.get(tuned_key(plan, arch, ablation)))


def baselines(plan: PlanConfig, tuned: Tuned) -> dict[str, Cell]:
    return {arch: resolve_cell(plan, arch, BASELINE, tuned) for arch in plan.architectures}


@functools.lru_cache(maxsize=64)
def measure(model: ModelConfig) -> tuple[int, int | None, int | None]:
    """(parameters, stride of the first conv, fewest output channels of a conv); None where there is no conv."""
    built = build_model_from(model)
    convs = [m for m in built.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return count_parameters(built), None, None
    return count_parameters(built), convs[0].stride[0], min(c.out_channels for c in convs)


def model_table(plan: PlanConfig) -> pd.DataFrame:
    """Per architecture, the model its baseline cell builds (tuned values change no model)."""
    rows = {}
    for arch, cell in baselines(plan, {}).items():
        info, (size, stride, narrowest) = model_info(arch), measure(cell.model)
        paper = paper_facts(info.family)
        _, _, norm, _, dropout, _, _ = cell.model.effective()
        rows[arch] = {
            "width": f"{cell.model.width:g}",
            "parameters": f"{size:,}",
            "first conv": "no conv" if stride is None else _stem(stride, cell),
            "narrowest conv": "no conv" if narrowest is None else f"{narrowest} channel{'s' * (narrowest != 1)}",
            "conv init": "no conv" if stride is None else INIT_TEXT[cell.model.init],
            "normalization (paper)": f"{norm or 'none'} ({'batch' if paper.batch_norm else 'none'})",
            "dropout (paper)": f"{dropout:g} ({paper.dropout:g})",
            "paper's, not here": paper.not_here or "–",
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arch")


INIT_TEXT = {"he": "He (2/fan_in)", "torch": "PyTorch default"}


def _stem(stride: int, cell: Cell) -> str:
    return f"stride {stride}" + (" (stem_stride)" if cell.model.stem_stride != 1 else "")


def training_table(plan: PlanConfig, tuned: Tuned) -> pd.DataFrame:
    """Per architecture, how its baseline cell trains, with the origin of its lr and weight decay."""
    hand_set = baselines(plan, {})
    rows = {}
    for arch, cell in baselines(plan, tuned).items():
        opt, train = cell.train.optimizer, cell.train
        origin = {key: _origin_text(key, plan, arch, tuned, hand_set[arch]) for key in ("lr", "weight_decay")}
        warmup = f", {train.schedule.warmup_epochs:g} warmup epochs" if train.schedule.warmup_epochs else ""
        rows[arch] = {
            "optimizer": _optimizer(opt),
            "lr": f"{opt.lr:.3g} ({origin['lr']})",
            "weight decay": f"{opt.weight_decay:.3g} ({origin['weight_decay']})",
            "schedule": train.schedule.name + warmup,
            "epochs": str(train.epochs),
            "batch size": str(train.batch_size),
            "augmentation": train.augment.policy,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arch")


def _origin_text(key: str, plan: PlanConfig, arch: str, tuned: Tuned, hand_set: Cell) -> str:
    origin = value_origin(key, plan.ablations[BASELINE], tuned.get(arch))
    if origin == TUNED and tuned[arch][key] == getattr(hand_set.train.optimizer, key):
        return "tuned: the recipe's value won"  # trial 0 of every study is the recipe's own lr and wd
    return origin


def _optimizer(opt) -> str:
    if opt.name == "momentum":
        return f"SGD, {'Nesterov ' if opt.nesterov else ''}momentum {opt.momentum:g}"
    return OPTIMIZER_NAMES.get(opt.name, opt.name)


def origins_table(plan: PlanConfig, tuned: Tuned) -> pd.DataFrame:
    """Per technique (an ablation's `buys`): its two cells and where each side's lr and weight decay come
    from, over the architectures where both cells run ("tuned; recipe for lstm" where they differ)."""
    cells = {(c.arch, c.ablation): c for c in all_cells(plan, tuned)}
    rows = {}
    for name, spec in plan.ablations.items():
        if spec.buys is None:
            continue
        sides = (spec.buys.with_, spec.buys.without)
        row = {"= with − without": f"{sides[0]} − {sides[1]}"}
        if not all(side in plan.ablations for side in sides):
            rows[spec.buys.technique] = row | {"lr: with / without": "not planned", "wd: with / without": "not planned"}
            continue
        archs = [a for a in plan.architectures if all(cells[(a, s)].not_applicable is None for s in sides)]
        if not archs:  # no architecture runs both cells in this preset: not a comparison of this report
            continue
        for key, label in (("lr", "lr: with / without"), ("weight_decay", "wd: with / without")):
            row[label] = _summary({a: " / ".join(cell_origin(key, plan, tuned, a, s) for s in sides) for a in archs})
        rows[spec.buys.technique] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("technique")


def _summary(by_arch: dict[str, str]) -> str:
    """The most common value, then the exceptions by architecture; "n/a" when no architecture runs both."""
    if not by_arch:
        return "n/a"
    common = Counter(by_arch.values()).most_common(1)[0][0]
    others = {}
    for arch, value in by_arch.items():
        if value != common:
            others.setdefault(value, []).append(arch)
    return "; ".join([common, *(f"{value} for {', '.join(archs)}" for value, archs in others.items())])


def data_text(budget: Budget) -> str:
    """The preset's images and seeds in words (every architecture shares them)."""
    if budget.train_subset:
        train = (f"{budget.train_subset:,} training images (a stratified draw per seed: each seed its own, shared "
                 "by every cell of that seed)")
    else:
        train = "all of the training split (50,000 images less data.val_size) for every seed"
    val = (f"{budget.val_subset:,} validation images (the first {budget.val_subset:,} of the validation split, the "
           "same for every seed)" if budget.val_subset else "the whole validation split (data.val_size images)")
    seeds = f"seeds {', '.join(map(str, budget.seeds))}"
    return (f"Data: {train}; {val}; {test_text(budget)}; {seeds}. Each run scores its test images once; tuning "
            "and early stopping read validation images only.")


def test_text(budget: Budget) -> str:
    skip = budget.test_skip
    n = min(budget.test_subset or OFFICIAL_TEST, OFFICIAL_TEST - skip)
    if skip:
        return (f"{n:,} test images (official test images {skip:,}-{skip + n - 1:,}; 0-{skip - 1:,} were looked at "
                "when a budget was chosen and are not scored)")
    return f"all {n:,} official test images" if n == OFFICIAL_TEST else f"{n:,} test images (official 0-{n - 1:,})"


def regime_text(plan: PlanConfig) -> str:
    """One sentence on what the results can say, from the baselines' widths, sizes, epochs and data."""
    cells = baselines(plan, {})
    widths = sorted(c.model.width for c in cells.values())
    epochs = sorted(c.train.epochs for c in cells.values())
    budget = plan.presets[plan.preset]
    if widths == [1.0] * len(widths) and budget.train_subset is None:
        return ("The papers' widths, adapted to 32x32 inputs as the table says, on the whole training split: a "
                "comparison of techniques within each architecture, beside a published number only where one "
                "exists for the same architecture and depth.")
    sizes = sorted(measure(c.model)[0] for c in cells.values())
    data = f"{budget.train_subset:,} training images" if budget.train_subset else "the whole training split"
    return (f"Scaled-down models (width {widths[0]:g}-{widths[-1]:g}, {sizes[0]:,}-{sizes[-1]:,} parameters) "
            f"trained on limited data ({data}, {epochs[0]}-{epochs[-1]} epochs): a comparison of techniques within "
            "each architecture, not a ranking of the papers' models.")


def disclosure_section(plan: PlanConfig | None, tuned: Tuned) -> Section:
    title = "0. What was trained"
    if plan is None:
        return Section("disclosure", title, "No plan was given to this report.", [])
    blocks = [
        "The model each architecture's baseline cell builds (paper's value in parentheses; every ablation changes "
        "one thing of it, section 2). stem_stride: a stride-2 first conv, so every later layer sees a quarter of "
        "the pixels (a CPU shortcut; the CIFAR stems of the papers and of kuangliu/pytorch-cifar have stride 1).",
        Table(model_table(plan)),
        "How each baseline cell trains, and where its lr and weight decay come from:",
        Table(training_table(plan, tuned)),
        Bullets([text for origin, text in ORIGINS.items()
                 if origin != OWN_STUDY or any(a.tune == "own" for a in plan.ablations.values())]),
        data_text(plan.presets[plan.preset]),
        Strong(regime_text(plan)),
        "Where each side of each comparison takes its lr and weight decay (over the architectures where both "
        "cells run). Tuned values are searched for the baseline cell and reused as they are by every cell that "
        "takes them: in dropout − baseline, for one, only the baseline side trains with values searched for it. "
        "An ablation marked `tune: own` (no_bn) is searched on its own cell instead, so that side trains at the "
        "values best for it.",
        Table(origins_table(plan, tuned)),
    ]
    return Section("disclosure", title, "What this preset trained, before any result: read the leaderboard and "
                   "the comparisons against it.", blocks)
