"""What one study searches, and its name: a hash of all that decides a trial's result, so changing any
of it starts a fresh study while raising `tune_trials` extends the old one."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass

import optuna

from cifarbench import codeclosure
from cifarbench.paths import PREPARED
from cifarbench.engine.registry import lookup
from cifarbench.errors import ConfigError
from cifarbench.plan import BASELINE, Cell, PlanConfig, resolve_cell, tuned_key
from cifarbench.tuning.config import PRUNERS, TuneConfig


@dataclass(frozen=True)
class Search:
    """What one study searches: the cell it tunes (the baseline's, or a `tune: own` ablation's) at the
    tuning epochs, the ranges, how many trials."""

    cell: Cell  # lr and weight decay in cell.train.optimizer are replaced by each trial's
    lr: tuple[float, float]
    weight_decay: tuple[float, float] | None  # None: the cell has no weight decay (or sets its own), kept
    trials: int
    study: str
    key: str  # plan.tuned_key of the cells that take its values: `arch`, or `arch/ablation` for an own study

    @property
    def seed(self) -> int:
        return self.cell.seeds[0]  # every trial starts from the same initialization

    @property
    def own(self) -> bool:
        """Whether this is an ablation's own study rather than its architecture's baseline's."""
        return self.cell.ablation != BASELINE


def make_search(plan: PlanConfig, cfg: TuneConfig, arch: str, storage: str, ablation: str = BASELINE) -> Search:
    """The study of `arch`'s baseline, or of its `ablation` cell (a `tune: own` ablation: the ablation's own
    config is the trials' base; ranges, sampler, pruner and trials are the baseline study's)."""
    key = tuned_key(plan, arch, ablation)
    if ablation != BASELINE and key == arch:
        raise ConfigError(f"ablation {ablation!r} takes {arch}'s baseline's tuned values: set "
                          f"`ablations.{ablation}.tune: own` in params.yaml to tune it on its own")
    base = resolve_cell(plan, arch, ablation)
    if base.not_applicable:
        raise ConfigError(f"cell {base.name} is not run ({base.not_applicable}): it has no study")
    # A trial never trains longer than the cell it tunes: its lr must suit that cell's schedule.
    epochs = min(base.budget.tune_epochs or base.train.epochs, base.train.epochs)
    cell = dataclasses.replace(base, train=base.train.model_copy(update={"epochs": epochs}))
    opt = cell.train.optimizer
    lr = lookup(cfg.lr, opt.name, f"params.yaml tune.lr range for {arch}'s optimizer")
    own_wd = plan.ablations[ablation].keeps_own("weight_decay")  # kept by plan.tuned_values: not searched
    wd = cfg.weight_decay if opt.weight_decay > 0 and not own_wd else None
    info = PREPARED / "info.json"
    data = json.loads(info.read_text()) if info.is_file() else {}
    what = {"cell": cell.config(), "lr": lr, "wd": wd, "seed": base.seeds[0], "sampler_seed": cfg.sampler_seed,
            "startup": cfg.startup_trials, "pruner": cfg.pruner.model_dump(),
            "data": {k: data.get(k) for k in ("archive_md5", "val_size", "seed")}, "code": code_digest()}
    del storage  # where the study lives is not part of what it searches
    for value in ("lr", "weight_decay"):  # overridden by every trial
        what["cell"]["train"]["optimizer"].pop(value)
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    # The baseline's study keeps its name `<preset>/<arch>/<hash>`; an own study adds the ablation.
    return Search(cell, lr, wd, base.budget.tune_trials, f"{plan.preset}/{key}/{digest}", key)


def first_prune_epoch(cfg: TuneConfig, search: Search) -> int:
    """The first epoch at which trials are compared: not before `tune.pruner.min_epochs`, and not before the
    learning rate has reached its peak (one-cycle: `peak_fraction` of the run; else the warmup). Before
    the peak every trial still runs at a fraction of its lr and the ranking is noise."""
    train = search.cell.train
    peak = train.epochs * train.schedule.peak_fraction if train.schedule.name == "onecycle" else 0.0
    return max(cfg.pruner.min_epochs, math.ceil(max(peak, train.schedule.warmup_epochs)))


def make_pruner(cfg: TuneConfig, search: Search) -> optuna.pruners.BasePruner:
    pruner = cfg.pruner.model_copy(update={"min_epochs": first_prune_epoch(cfg, search)})
    return PRUNERS[pruner.name](pruner, cfg.startup_trials)


@functools.lru_cache(maxsize=1)  # one answer per process: the closure parses ~50 files (~0.2 s), once a study
def code_digest() -> str:
    """The import closure of the training code and this package (the tune stage's code deps in dvc.yaml):
    when DVC reruns the stage because that code changed, the study starts afresh instead of returning the
    old result."""
    return codeclosure.digest(codeclosure.closure([codeclosure.RUN_ENTRY, "cifarbench.tuning"]))
