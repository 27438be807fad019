"""Optuna tunes the learning rate and weight decay of each architecture's baseline cell, and of each cell of
an ablation marked `tune: own` (no_bn: an lr tuned with batch norm is often far too high without it), on
the validation split only (this package never loads the test split).

Study: one per (preset, architecture, search), named `<preset>/<arch>/<hash>`, and one per (preset,
architecture, own-tuned ablation, search), named `<preset>/<arch>/<ablation>/<hash>`: the ablation's own
cell is the trials' base, with the baseline study's ranges, sampler, pruner and trials. Only the cells the
preset runs get one (plan.tuning_targets: no study for no_bn of a network without batch norm, nor for an
ablation left out of the preset's list for the architecture). The hash covers all that decides a trial's
result (the cell at the tuning epochs, the data, the ranges, sampler and pruner, the training code), so
changing any of it starts a fresh study, while raising `tune_trials` extends the old one.

Storage: `tune.storage` in params.yaml, or the CIFARBENCH_OPTUNA_STORAGE environment variable. A path
(relative to the repository: the working directory, the repo root under `dvc repro`, or the repository a
`dvc exp run --temp`/`--queue` copy was made from) is an Optuna journal file: appends
under a file lock, so a killed process never corrupts it and workers on one machine share it. A URL
(postgresql://..., sqlite:///...) is an RDB storage with heartbeats, for workers on several machines.

Execution: the tune stage is the coordinator of every study at once. It asks trials
(within `presets.<preset>.tune_trials` complete, pruned or running) and hands each to the executor
(cifarbench.execute): the trials of all studies run in parallel on every core, GPU or Ray node. A worker
opens the study's storage itself to report each epoch and be pruned, so the storage must be reachable
from every worker (a journal file on a shared folder for one machine; PostgreSQL for several). A trial
left running by a coordinator that is gone (on the same machine: its pid is gone; for a journal, which
serves one machine, also any other host's; on an RDB storage: its heartbeat stopped) is marked failed
and its parameters are queued again, at most MAX_RETRIES times. A trial whose loss stops being finite is pruned
and tagged `diverged`, so TPE learns to avoid its region and it can never be the best.
Several coordinators may share a study (`cifarbench tune` on several machines): on one machine their
budget checks and asks are serialized by a file lock, so together they fill the budget exactly; across
machines nothing serializes them, and each extra coordinator may ask at most one trial over the budget.

Which ablations take the tuned values (plan.py merges them before the ablation): a `tune: own` ablation
its own study's, every other its baseline's; all take the tuned lr; all but `no_reg`, `no_l2` and `l1`
(which set weight decay to 0) take the tuned weight decay. A cell without weight decay (lstm: Adam
without it, as in its recipe) is tuned over lr only and keeps 0. Tuned files: runs/<preset>/tuned/<arch>.json
for the baseline's study, runs/<preset>/tuned/<arch>/<ablation>.json for an own study
(plan.read_tuned_values reads them all).

MLflow (cifarbench.tracking.studies): a parent run `tune/<arch>` (`tune/<arch>/<ablation>`) per study
holding the best values and parameter importances, with one nested run `.../trial<k>` per trial.

    config.py   params.yaml `tune` (TuneConfig) and the pruners by name
    search.py   what a study searches and its name (Search, make_search), the pruner's first epoch
    storage.py  journal file or RDB storage, the journal's lock and repair, trial owners
    study.py    the coordinator's side of a study: ask, tell, requeue, summarize (Study)
    trial.py    one trial in a worker (TrialSpec, run_trial), trained by cifarbench.runner.train_one
    stage.py    tune_stage, the tune stage (`cifarbench tune`: cifarbench.commands.tune)
"""

from cifarbench.tuning.config import PRUNERS, PrunerConfig, TuneConfig
from cifarbench.tuning.search import Search, first_prune_epoch, make_pruner, make_search
from cifarbench.tuning.stage import tune_stage
from cifarbench.tuning.storage import (
    ENV_STORAGE, MAX_RETRIES, FlockLock, journal_storage, open_storage, repair_journal, storage_url,
)
from cifarbench.tuning.study import Study, importances, summarize
from cifarbench.tuning.trial import TrialSpec, run_trial

__all__ = [
    "ENV_STORAGE", "MAX_RETRIES", "PRUNERS", "FlockLock", "PrunerConfig", "Search", "Study", "TrialSpec", "TuneConfig",
    "first_prune_epoch", "importances", "journal_storage", "make_pruner", "make_search", "open_storage",
    "repair_journal", "run_trial", "storage_url", "summarize", "tune_stage",
]
