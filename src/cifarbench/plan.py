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
an ablation that sets `optimizer.name` keeps its own lr (an lr tuned for SGD is no lr for Adam).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from cifarbench.config import MAX_SEED, Name, Section, describe
from cifarbench.engine import TrainConfig
from cifarbench.engine.config import MAX_EPOCHS, OptimizerConfig
from cifarbench.errors import ConfigError
from cifarbench.models import ModelConfig, model_info

BASELINE = "baseline"
Tree = dict[str, Any]
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
    model: Tree = {}
    train: Tree = {}


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


def deep_merge(base: Tree, override: Tree) -> Tree:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _layers(plan: PlanConfig, arch: str, ablation: str | None, tuned: Tree | None) -> list[tuple[str, Tree]]:
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
        layers.append((f"tuned values for {arch}", {"train": {"optimizer": taken}}))
    if abl is not None:
        layers.append((f"ablations.{ablation}", {"model": abl.model, "train": abl.train}))
    return layers


def tuned_values(ablation: AblationSpec | None, tuned: Tree | None) -> Tree:
    """The tuned optimizer values (tune stage: {"lr": .., "weight_decay": ..}) a cell of `ablation` takes.

    Tuning searches the baseline's lr and weight decay; every ablation takes them, except a value the
    ablation sets itself: `no_reg`, `no_l2` and `l1` set `train.optimizer.weight_decay: 0` to measure what
    weight decay buys, and the tuned value would undo exactly that. They still take the tuned lr.
    An ablation that sets `optimizer.name` (sgd, adam, adamw) trains another optimizer, whose lr the
    baseline's study never searched (Adam's is ~100x smaller than SGD's): it keeps its own lr, the one it
    sets, else the hand-set one of the layers below. It takes the tuned weight decay unless it sets its own
    (coupled L2 is part of the loss, the same for every optimizer; adamw's decoupled decay sets its own).
    None or {} (the preset does not tune) gives {}: the recipe's values stand."""
    own = ablation.train.get("optimizer") if ablation is not None else None
    own = own if isinstance(own, dict) else {}  # a malformed one is refused by TrainConfig, naming the key
    kept = set(own) | ({"lr"} if "name" in own else set())
    return {key: value for key, value in (tuned or {}).items() if key not in kept}


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


def resolve_cell(plan: PlanConfig, arch: str, ablation: str, tuned: Tree | None = None) -> Cell:
    if arch not in plan.architectures:
        raise ConfigError(f"architecture {arch!r} is not in params.yaml `architectures`: {', '.join(plan.architectures)}")
    if ablation not in plan.ablations:
        raise ConfigError(f"ablation {ablation!r} is not in params.yaml `ablations`: {', '.join(plan.ablations)}")
    where = f"cell {arch}/{ablation}"
    abl, budget = plan.ablations[ablation], plan.presets[plan.preset]
    info = model_info(arch)
    reason = None
    missing = [key for key in SWITCHES if key in abl.model and getattr(info, SWITCHES[key][0]) is None]
    if missing:
        reason = f"{arch} has no {SWITCHES[missing[0]][1]} to switch"
        abl = abl.model_copy(update={"model": {k: v for k, v in abl.model.items() if k not in missing}})
        plan = plan.model_copy(update={"ablations": {**plan.ablations, ablation: abl}})
    model, train = _validate(_layers(plan, arch, ablation, tuned), arch, where)
    listed = plan.architectures[arch].presets.get(plan.preset, ArchitectureBudget()).ablations
    if reason is None and ablation != BASELINE and listed is not None and ablation not in listed:
        reason = f"not in preset {plan.preset} for {arch} (cost; architectures.{arch}.presets.{plan.preset}.ablations)"
    if ablation != BASELINE and reason is None:
        base_model, base_train = _validate(_layers(plan, arch, BASELINE, tuned), arch, f"cell {arch}/{BASELINE}")
        reason = _nothing_to_change(plan, abl, arch, base_model, base_train)
        if reason is None and base_model.effective() == model.effective() and base_train == train:
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


def all_cells(plan: PlanConfig, tuned: dict[str, Tree] | None = None) -> list[Cell]:
    """Every cell, validated: called before any training so bad params fail first."""
    tuned = tuned or {}
    return [resolve_cell(plan, a, b, tuned.get(a)) for a in plan.architectures for b in plan.ablations]


def read_tuned(path: Path) -> Tree | None:
    """The tune stage's best {lr, weight_decay} for one architecture, or None when the preset does not tune.

    The file (written by cifarbench.tuning) holds {"tuned": bool, "optimizer": {"lr": .., "weight_decay": ..}, ...}.
    """
    if not Path(path).is_file():
        raise ConfigError(f"{path} not found: run `dvc repro` (the tune stage writes it)")
    values = json.loads(Path(path).read_text())
    return values.get("optimizer") if values.get("tuned") else None

