"""The benchmark plan: which (architecture, ablation) cells run, and the exact config of each.

A cell's config is built from params.yaml by merging, in this order (later wins):

    recipe                               the literature baseline shared by all architectures
    architectures.<arch>                 what this architecture does differently (e.g. Adam for the LSTM)
    presets.<preset>                     the budget shared by all architectures (epochs, subsets, seeds)
    architectures.<arch>.presets.<preset>  this architecture's budget (width, epochs)
    tuned lr / weight decay              from the tune stage, when the preset tunes (`tuned_values`)
    ablations.<ablation>                 the one thing this ablation changes

Which ablations take the tuned values is one rule, `tuned_values`: every ablation takes the tuned learning
rate and weight decay except a value it sets itself (`no_reg`, `no_l2` and `l1` set weight decay to 0), and
an ablation that sets `optimizer.name` keeps its own lr (an lr tuned for SGD is no lr for Adam) unless it
has `tune: own`: then its own study searches its optimizer's lr, starting from the one it sets.
Whose tuned values: the baseline's study's, except for an ablation with `tune: own` (no_bn; sgd, adam and
adamw, each optimizer at its own tuned lr), whose cells take the values of a study of their own (`tuning_targets` lists the studies a preset runs, `tuned_key`
names the one a cell takes, `read_tuned_values` reads them all).
An ablation that resolves to the baseline's own config for an architecture (dropout where the paper
already uses it, no_bn where there is no norm, pool_avg where the pools already average), or that has
nothing to change there (a norm or pooling switch the model lacks, a norm to replace where the baseline
has none, an optimizer to compare where the baseline does not train with the recipe's), is not run: the
cell is marked not applicable, with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from cifarbench.config import MAX_SEED, Name, Section, describe
from cifarbench.engine import TrainConfig
from cifarbench.engine.config import MAX_EPOCHS, OptimizerConfig
from cifarbench.errors import ConfigError
from cifarbench.models import ModelConfig, model_info
from cifarbench.paths import tuned_path
from cifarbench.tuned_file import read_tuned_file

BASELINE = "baseline"
Tree = dict[str, Any]
# What the tune stage found, by tuned_key: "vgg11" (the baseline's study) or "vgg11/no_bn" (an ablation's own
# study) -> {"lr": .., "weight_decay": ..}, or None where the preset does not tune (the recipe's values stand).
Tuned = Mapping[str, Tree | None]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Budget(Section):
    """What a preset fixes for every architecture."""

    about: str = ""
    seeds: list[Seed] = Field(min_length=1, max_length=100)
    # Upper bounds: CIFAR-10 has 50,000 training (train + val) and 10,000 test images.
    train_subset: int | None = Field(None, ge=10, le=50_000, description="first N of the (shuffled) training split; None = all")
    val_subset: int | None = Field(None, ge=10, le=50_000, description="first N of the validation split, for per-epoch checks")
    test_subset: int | None = Field(None, ge=10, le=10_000, description="first N scored test images; None = all not skipped")
    # Official test images 0..test_skip-1 are never scored: a budget chosen by looking at them (the CPU presets'
    # budgets of 2026-11/12 were picked on test images 0-1999) would be graded on its own stopping rule.
    test_skip: int = Field(0, ge=0, le=9_990, description="the first N official test images are not scored (looked at by a past choice)")
    tune_trials: int = Field(0, ge=0, le=10_000, description="Optuna trials per architecture; 0 = no tuning, recipe lr/wd")
    tune_epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="epochs per trial, at most the architecture's; None = those")
    architectures: list[Name] | None = Field(None, min_length=1, description="the architectures this preset runs; None = all")
    model: Tree = {}
    train: Tree = {}

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct (a repeated seed repeats the same run), got {v}")
        return v


class Recipe(Section):
    model: Tree = {}
    train: Tree = {}


class ArchitectureBudget(Recipe):
    """An architecture's budget in one preset; `ablations` (None = all) lists the cells the preset runs for it:
    the others are shown as not in this preset, a choice made on cost alone (the nightly runs them all)."""

    ablations: list[Name] | None = Field(None, min_length=1)


class ArchitectureSpec(Section):
    model: Tree = {}
    train: Tree = {}
    presets: dict[Name, ArchitectureBudget] = {}


class Buys(Section):
    """The question an ablation answers: what `technique` buys = test accuracy of cell `with` minus cell
    `without`, paired by seed (e.g. crop+flip = baseline - aug_none; rotation = rotate - aug_none). A
    matrix trimmed to fewer ablations may leave one of the two out: the report then says "not planned"."""

    model_config = ConfigDict(populate_by_name=True)

    technique: str = Field(min_length=1, max_length=40)
    with_: Name = Field(alias="with")
    without: Name


class AblationSpec(Section):
    group: Literal["baseline", "regularization", "augmentation", "optimization", "architecture"]
    about: str
    buys: Buys | None = None  # None for the baseline: the reference, not a question
    tune: Literal["baseline", "own"] = Field(
        "baseline", description="whose tuned lr/weight decay the cells take: the baseline's study, or a study "
        "of this ablation's own cell (same search, lr range by its optimizer; for a change that moves the best lr, "
        "e.g. no batch norm, another optimizer)")
    model: Tree = {}
    train: Tree = {}

    def keeps_own(self, key: str) -> bool:
        """Whether this ablation's cells keep optimizer value `key` ("lr", "weight_decay") rather than a tuned
        one. A value it sets itself (no_l2's weight_decay 0) is what it measures: kept. An ablation that sets
        `optimizer.name` (sgd, adam, adamw) trains another optimizer, whose lr the baseline's study never
        searched (Adam's is ~100x smaller than SGD's): it keeps its own lr, the one it sets, else the hand-set
        one of the layers below; unless it has `tune: own`, whose study searches that optimizer's lr: the lr
        it sets is then only that study's trial 0 (the starting point), and its cells take the tuned lr."""
        own = self.train.get("optimizer")
        if not isinstance(own, dict):  # a malformed one is refused by TrainConfig, naming the key
            return False
        if key == "lr" and "name" in own:
            return self.tune != "own"
        return key in own

class PlanConfig(Section):
    preset: Name
    presets: dict[Name, Budget]
    recipe: Recipe
    architectures: dict[Name, ArchitectureSpec] = Field(min_length=1)
    ablations: dict[Name, AblationSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Cell:
    arch: str
    ablation: str
    group: str
    about: str
    preset: str
    budget: Budget
    model: ModelConfig
    train: TrainConfig
    not_applicable: str | None = None  # why the cell is not run, or None

    @property
    def name(self) -> str:
        return f"{self.arch}/{self.ablation}"

    @property
    def seeds(self) -> list[int]:
        return self.budget.seeds

    def config(self) -> Tree:
        """Everything that determines the cell's results, as plain data (logged as MLflow params)."""
        budget = self.budget.model_dump(include={"train_subset", "val_subset", "test_subset", "test_skip"})
        return {"model": self.model.model_dump(), "train": self.train.model_dump(mode="json"), "data": budget}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:12]


def check_plan(plan: PlanConfig) -> None:
    """What the sections' own types cannot check: the preset, the baseline and the architectures exist."""
    if plan.preset not in plan.presets:
        raise ConfigError(f"params.yaml: preset: {plan.preset!r} is not defined; presets: {', '.join(plan.presets)}")
    if BASELINE not in plan.ablations:
        raise ConfigError(f"params.yaml: ablations: must define `{BASELINE}` (the reference every ablation is compared with)")
    for arch, spec in plan.architectures.items():
        model_info(arch)  # unknown architecture -> ConfigError listing the valid names
        # Only the preset that runs: a user trimming `ablations` need not edit other presets' lists.
        listed = spec.presets[plan.preset].ablations if plan.preset in spec.presets else None
        unknown = [a for a in listed or [] if a not in plan.ablations]
        if unknown:
            raise ConfigError(f"params.yaml: architectures.{arch}.presets.{plan.preset}.ablations: {', '.join(unknown)} "
                              f"not in `ablations`: {', '.join(plan.ablations)}")
    if plan.ablations[BASELINE].tune != "baseline":
        raise ConfigError(f"params.yaml: ablations.{BASELINE}.tune: the baseline is always tuned by its own study; "
                          "remove the key")
    for name, spec in plan.ablations.items():
        if spec.tune == "own" and spec.keeps_own("lr"):
            raise ConfigError(f"params.yaml: ablations.{name}.tune: own, but the ablation sets its lr itself (the lr "
                              "is what it measures, kept by every cell): its study would search an lr its cells never "
                              "take; remove `tune: own` or the lr (an ablation that also sets `optimizer.name` may "
                              "keep its lr: that optimizer's study starts from it)")


def deep_merge(base: Tree, override: Tree) -> Tree:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _layers(plan: PlanConfig, arch: str, ablation: str | None, tuned: Tree | None,
            tuned_by: str = "") -> list[tuple[str, Tree]]:
    spec, budget = plan.architectures[arch], plan.presets[plan.preset]
    arch_budget = spec.presets.get(plan.preset, ArchitectureBudget())
    layers = [
        ("recipe", plan.recipe.model_dump()),
        (f"architectures.{arch}", {"model": spec.model, "train": spec.train}),
        (f"presets.{plan.preset}", {"model": budget.model, "train": budget.train}),
        (f"architectures.{arch}.presets.{plan.preset}", {"model": arch_budget.model, "train": arch_budget.train}),
    ]
    abl = plan.ablations[ablation] if ablation is not None else None
    if taken := tuned_values(abl, tuned):
        layers.append((f"tuned values of {tuned_by or arch}", {"train": {"optimizer": taken}}))
    if abl is not None:
        train, own = abl.train, abl.train.get("optimizer")
        if taken and isinstance(own, dict):  # a value it sets but does not keep (adam's lr under `tune: own`) is
            # only its study's trial 0: the tuned one replaces it
            train = {**train, "optimizer": {key: value for key, value in own.items() if key not in taken}}
        layers.append((f"ablations.{ablation}", {"model": abl.model, "train": train}))
    return layers


def tuned_values(ablation: AblationSpec | None, tuned: Tree | None) -> Tree:
    """Of the tuned optimizer values `tuned` (one study's: {"lr": .., "weight_decay": ..}), those a cell of
    `ablation` takes: all, except a value the ablation sets itself. `no_reg`, `no_l2` and `l1` set
    `train.optimizer.weight_decay: 0` to measure what weight decay buys, and the tuned value would undo
    exactly that; they still take the tuned lr. An ablation that changes the optimizer keeps its own lr
    (unless `tune: own`: its own study's lr) and takes the tuned weight decay unless it sets its own (coupled
    L2 is part of the loss, the same for every optimizer; adamw's decoupled decay sets its own); see
    AblationSpec.keeps_own. None or {} (the
    preset does not tune) gives {}: the recipe's values stand. Which study's values `tuned` holds is
    `tuned_key`'s choice."""
    return {key: value for key, value in (tuned or {}).items() if ablation is None or not ablation.keeps_own(key)}


def tuned_key(plan: PlanConfig, arch: str, ablation: str) -> str:
    """The study whose tuned values cell (arch, ablation) takes: `arch` (its baseline's study) for every
    ablation but one with `tune: own`, which takes `arch/ablation` (a study of its own cell: an lr tuned with
    batch norm is often far too high without it, and no_bn would measure that mismatch, not batch norm; an
    optimizer compared at an lr tuned for another measures the lr, not the optimizer)."""
    return f"{arch}/{ablation}" if ablation != BASELINE and plan.ablations[ablation].tune == "own" else arch


def _validate(layers: list[tuple[str, Tree]], arch: str, where: str) -> tuple[ModelConfig, TrainConfig]:
    merged: Tree = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    merged.setdefault("model", {})["name"] = arch
    try:
        return ModelConfig.model_validate(merged["model"]), TrainConfig.model_validate(merged.get("train", {}))
    except ValidationError as exc:
        raise ConfigError(_explain(exc, layers, where)) from None


def _explain(exc: ValidationError, layers: list[tuple[str, Tree]], where: str) -> str:
    section = "model" if exc.title == ModelConfig.__name__ else "train"
    lines = []
    for err in exc.errors():
        path = [section, *(str(p) for p in err["loc"] if p != "[key]")]
        sources = [name for name, layer in layers if _has_path(layer, path)] or ["(default)"]
        lines.append(f"params.yaml: {'.'.join(path)} ({where}, set in {' then '.join(sources)}): {describe(err)}")
    return "\n".join(lines)


def _has_path(tree: Tree, path: list[str]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def resolve_cell(plan: PlanConfig, arch: str, ablation: str, tuned: Tuned | None = None) -> Cell:
    """Cell (arch, ablation) of the preset, with the tuned values it takes from `tuned` (by `tuned_key`)."""
    if arch not in plan.architectures:
        raise ConfigError(f"architecture {arch!r} is not in params.yaml `architectures`: {', '.join(plan.architectures)}")
    if ablation not in plan.ablations:
        raise ConfigError(f"ablation {ablation!r} is not in params.yaml `ablations`: {', '.join(plan.ablations)}")
    where = f"cell {arch}/{ablation}"
    abl, budget = plan.ablations[ablation], plan.presets[plan.preset]
    tuned, key = tuned or {}, tuned_key(plan, arch, ablation)
    info = model_info(arch)
    reason = None
    missing = [key for key in SWITCHES if key in abl.model and getattr(info, SWITCHES[key][0]) is None]
    if missing:
        reason = f"{arch} has no {SWITCHES[missing[0]][1]} to switch"
        abl = abl.model_copy(update={"model": {k: v for k, v in abl.model.items() if k not in missing}})
        plan = plan.model_copy(update={"ablations": {**plan.ablations, ablation: abl}})
    model, train = _validate(_layers(plan, arch, ablation, tuned.get(key), key), arch, where)
    listed = plan.architectures[arch].presets.get(plan.preset, ArchitectureBudget()).ablations
    if reason is None and ablation != BASELINE and listed is not None and ablation not in listed:
        reason = f"not in preset {plan.preset} for {arch} (cost; architectures.{arch}.presets.{plan.preset}.ablations)"
    if ablation != BASELINE and reason is None:
        # Compared under the same (the baseline's) tuned values: whether the ablation changes anything does not
        # depend on which study tuned it, so it decides whether an own study runs at all (tuning_targets).
        base = tuned.get(arch)
        base_model, base_train = _validate(_layers(plan, arch, BASELINE, base), arch, f"cell {arch}/{BASELINE}")
        same_train = train if key == arch else _validate(_layers(plan, arch, ablation, base), arch, where)[1]
        reason = _nothing_to_change(plan, abl, arch, base_model, base_train)
        if reason is None and base_model.effective() == model.effective() and base_train == same_train:
            reason = f"same config as {BASELINE} for {arch}"
    return Cell(arch, ablation, abl.group, abl.about, plan.preset, budget, model, train, reason)


# Model switches an ablation may set, with the ModelInfo field saying whether the model has it (None: no).
SWITCHES = {"norm": ("default_norm", "normalization layers"), "pooling": ("default_pooling", "down-sampling pools")}


def _nothing_to_change(plan: PlanConfig, abl: AblationSpec, arch: str, base_model: ModelConfig,
                       base_train: TrainConfig) -> str | None:
    """Why an ablation that replaces a part of the baseline has no such part to replace here, or None:
    another norm where the baseline has none (that would measure adding a norm, `no_bn`'s question); another
    optimizer where the baseline does not train with the recipe's (its `buys` compares with the recipe's)."""
    norm = abl.model.get("norm")
    if norm not in (None, "none") and base_model.effective()[2] == "none":
        return f"{arch}'s baseline has no normalization for {norm} norm to replace"
    own = abl.train.get("optimizer")
    recipe = plan.recipe.train.get("optimizer", {}).get("name", OptimizerConfig.model_fields["name"].default)
    if isinstance(own, dict) and "name" in own and base_train.optimizer.name != recipe:
        return (f"{arch}'s baseline trains with {base_train.optimizer.name}, not the recipe's {recipe}, "
                f"which the optimizer ablations are compared with")
    return None


def all_cells(plan: PlanConfig, tuned: Tuned | None = None) -> list[Cell]:
    """Every cell, validated: called before any training so bad params fail first."""
    return [resolve_cell(plan, a, b, tuned) for a in plan.architectures for b in plan.ablations]


def tuning_targets(plan: PlanConfig) -> list[tuple[str, str]]:
    """The (arch, ablation) cells the preset's tune stage runs a study for: every architecture's baseline,
    and each `tune: own` ablation's cell where the preset runs it (not one outside the preset's `ablations`
    list for the architecture, nor one not applicable: no_bn of a network without batch norm)."""
    targets = []
    for arch in plan.architectures:
        targets.append((arch, BASELINE))
        targets += [(arch, name) for name, spec in plan.ablations.items() if name != BASELINE and spec.tune == "own"
                    and resolve_cell(plan, arch, name).not_applicable is None]
    return targets


def read_tuned(path: Path) -> Tree | None:
    """One study's tuned {lr, weight_decay} from its file, or None when the preset does not tune.

    The file (written by cifarbench.tuning) holds {"tuned": bool, "optimizer": {"lr": .., "weight_decay": ..}, ...}.
    """
    if not Path(path).is_file():
        raise ConfigError(f"{path} not found: run `dvc repro` (the tune stage writes it)")
    values = read_tuned_file(path)
    return values.get("optimizer") if values.get("tuned") else None


def read_tuned_values(plan: PlanConfig, missing_ok: bool = False) -> dict[str, Tree | None]:
    """Every tuned value the plan's cells take, by tuned_key: the files of the studies `tuning_targets` lists
    (runs/<preset>/tuned/<arch>.json and <arch>/<ablation>.json). A missing file is an error naming the fix,
    or with `missing_ok` (the report of a plan not yet tuned) None: the recipe's values."""
    out: dict[str, Tree | None] = {}
    for arch, ablation in tuning_targets(plan):
        path = tuned_path(plan.preset, arch, None if ablation == BASELINE else ablation)
        out[tuned_key(plan, arch, ablation)] = None if missing_ok and not path.is_file() else read_tuned(path)
    return out
