"""One trial, in an executor's worker: the study's cell with the trial's lr and weight decay, trained by
the same function as a benchmark run (runner.train_one) on the training subset, scored per epoch on the
validation subset (never the test split), reported to the study each epoch and pruned by it."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from cifarbench.runner import train_one, training_data
from cifarbench.tracking import Tracker, TrialLog
from cifarbench.tuning.config import TuneConfig
from cifarbench.tuning.search import Search, first_prune_epoch, make_pruner
from cifarbench.tuning.storage import heartbeat, open_storage


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial (it pickles: Ray nodes and worker processes get it whole)."""

    search: Search
    storage: str  # journal path (absolute) or RDB URL
    tune: TuneConfig
    trial_id: int
    number: int
    params: dict[str, float]  # lr, weight_decay
    prepared: Path  # absolute
    tracker: Tracker
    mlflow_run_id: str
    recipe: bool = False  # the recipe's own lr/wd (trial 0): the reference, pruned like any other trial

    @property
    def cell(self):
        """The study's cell (a baseline, or an own-tuned ablation) at the tuning epochs, with this trial's values."""
        train = self.search.cell.train
        optimizer = train.optimizer.model_copy(update=self.params)
        return dataclasses.replace(self.search.cell, train=train.model_copy(update={"optimizer": optimizer}))


def run_trial(spec: TrialSpec) -> dict:
    """Train one trial; returns {state, value, epochs, diverged}."""
    quiet()
    storage = open_storage(spec.storage, spec.tune)
    study = optuna.load_study(study_name=spec.search.study, storage=storage, pruner=make_pruner(spec.tune, spec.search))
    first = first_prune_epoch(spec.tune, spec.search)
    trial = optuna.Trial(study, spec.trial_id)
    cell, log = spec.cell, TrialLog(spec.tracker, spec.mlflow_run_id)
    data = training_data(spec.prepared, cell.budget, spec.search.seed)
    epochs = [0]

    def on_epoch(record) -> None:
        epochs[0] = record.epoch
        log.log_epoch(record)
        trial.report(record.val_acc, record.epoch)
        if first <= record.epoch < cell.train.epochs and trial.should_prune():
            raise optuna.TrialPruned()

    try:
        with heartbeat(spec.trial_id, storage):
            result, _ = train_one(cell, spec.search.seed, data, on_epoch=on_epoch)
    except optuna.TrialPruned:
        return {"state": "pruned", "value": None, "epochs": epochs[0], "diverged": False}
    if result.status == "diverged":  # pruned, so TPE learns to avoid the region and it is never the best
        return {"state": "pruned", "value": None, "epochs": result.stopped_epoch, "diverged": True}
    return {"state": "complete", "value": result.best_val_acc, "epochs": epochs[0], "diverged": False}


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
