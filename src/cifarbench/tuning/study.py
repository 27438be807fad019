"""One study (of an architecture's baseline cell, or of a `tune: own` ablation's cell) as the coordinator
sees it: asks trials within the budget (complete, pruned or running), tells their outcomes, fails and
requeues the trials of coordinators that are gone, and sums the study up for the tuned file and its MLflow
parent run."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from cifarbench.processes import me
from cifarbench.tracking import StudyLog, Tracker
from cifarbench.tracking.tags import DIVERGED, REASON
from cifarbench.tuning.config import TuneConfig
from cifarbench.tuning.search import Search
from cifarbench.tuning.storage import MAX_RETRIES, is_dead, machine_lock, open_storage, shown
from cifarbench.tuning.trial import TrialSpec

OWNER = "owner"  # trial user attr: host/pid@start-time of the coordinator that asked it
RECIPE = "recipe"  # trial user attr: the untuned recipe values (trial 0)
PARENT_RUN = "mlflow_parent_run_id"  # study user attr: the study's MLflow parent run
TRIAL_RUN = "mlflow_run_id"  # trial user attr: the trial's MLflow run
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Study:
    """One study as the coordinator sees it: asks trials within the budget, tells results."""

    def __init__(self, search: Search, cfg: TuneConfig, url: str, tracker: Tracker):
        self.search, self.cfg, self.url, self.tracker = search, cfg, url, tracker
        self.journal = "://" not in url
        self.storage = open_storage(url, cfg)
        self.log = StudyLog(tracker, search.study, search.cell.preset, search.cell.arch, search.cell.ablation,
                            search.key)
        with self.lock():
            study = self.study(0)
            if not study.get_trials(deepcopy=False):
                study.enqueue_trial(self.recipe, user_attrs={RECIPE: True})
            self._fail_dead(study)
            self._open_parent(study)

    def _open_parent(self, study: optuna.Study) -> None:
        """The study's parent run, unless its best values are logged (MLflow params are immutable) and
        may change: a study extended by more trials after it finished gets a new parent run."""
        run_id = study.user_attrs.get(PARENT_RUN)
        logged = self.log.logged_best(run_id)
        if logged is not None:
            done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False)) >= self.search.trials
            if "lr" not in logged or (done and logged["lr"] == str(study.best_trial.params["lr"])):
                self.log.parent_run_id = run_id
                return
        run_id = self.log.open_parent(self.search.trials, self.search.cell.train.epochs, shown(self.url))
        study.set_user_attr(PARENT_RUN, run_id)

    @property
    def recipe(self) -> dict[str, float]:
        """The untuned values of the cell tuned (trial 0 of every study, so the gain of tuning is measured on
        the same seed, epochs and validation images)."""
        opt = self.search.cell.train.optimizer
        return {"lr": opt.lr, **({"weight_decay": opt.weight_decay} if self.search.weight_decay else {})}

    def lock(self):
        """Serializes budget checks and asks of the coordinators on this machine."""
        return machine_lock(self.url, self.search.study)

    def study(self, trial_number: int) -> optuna.Study:
        """The study with a sampler seeded by (sampler_seed, study key, trial number): each study (`vgg11`,
        `vgg11/no_bn`) draws its own trials, a run from scratch is reproducible, and a resumed run never
        redraws a trial's parameters."""
        key = int(hashlib.sha256(self.search.key.encode()).hexdigest()[:8], 16)
        seed = int(np.random.SeedSequence([self.cfg.sampler_seed, key, trial_number]).generate_state(1)[0])
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.cfg.startup_trials, multivariate=True,
                                             constant_liar=True)
        return optuna.create_study(storage=self.storage, study_name=self.search.study, direction="maximize",
                                   sampler=sampler, pruner=optuna.pruners.NopPruner(), load_if_exists=True)

    def ask(self, prepared: Path) -> TrialSpec | None:
        """The next trial to run, or None when the budget is taken (complete, pruned and running trials)."""
        with self.lock():
            study = self.study(0)
            trials = study.get_trials(deepcopy=False)
            states = Counter(t.state for t in trials)
            taken = states[TrialState.COMPLETE] + states[TrialState.PRUNED] + states[TrialState.RUNNING]
            if not states[TrialState.WAITING] and taken >= self.search.trials:
                return None
            space = {"lr": FloatDistribution(*self.search.lr, log=True)}
            if self.search.weight_decay:
                space["weight_decay"] = FloatDistribution(*self.search.weight_decay, log=True)
            trial = self.study(len(trials)).ask(space)
            trial.set_user_attr(OWNER, me())
        # Weight decay not searched is the cell's own (0 for lstm and no_l2; adamw's decoupled 0.05), kept.
        fixed_wd = self.search.cell.train.optimizer.weight_decay
        params = {"lr": trial.params["lr"], "weight_decay": trial.params.get("weight_decay", fixed_wd)}
        run_id = self.log.start_trial(trial.number, params, trial.user_attrs.get("retry_of"))
        trial.set_user_attr(TRIAL_RUN, run_id)
        study_id = self.storage.get_study_id_from_name(self.search.study)  # Trial has no public id
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        return TrialSpec(self.search, self.url, self.cfg, trial_id, trial.number, params, prepared,
                         self.tracker, run_id, bool(trial.user_attrs.get(RECIPE)))

    def left(self) -> int:
        """Trials still to ask (as `ask` counts them: complete, pruned and running ones take the budget; a queued
        one, the recipe's trial 0 or a requeued trial, is asked first, and taken then, even past the budget)."""
        states = Counter(t.state for t in self.study(0).get_trials(deepcopy=False))
        taken = states[TrialState.COMPLETE] + states[TrialState.PRUNED] + states[TrialState.RUNNING]
        return max(self.search.trials - taken, states[TrialState.WAITING], 0)

    def tell(self, spec: TrialSpec, outcome: dict | None, where: str = "") -> None:
        """Record a trial's outcome (None: it failed) in the study and its MLflow run; its line is printed after
        `where` (the stage's progress)."""
        study = self.study(0)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}[outcome["state"]] if outcome \
            else TrialState.FAIL
        tags = {DIVERGED: str(outcome["epochs"])} if outcome and outcome["diverged"] else {}
        if outcome:
            self.storage.set_trial_user_attr(spec.trial_id, "epochs", outcome["epochs"])
        with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
            study.tell(spec.number, outcome["value"] if state == TrialState.COMPLETE else None, state=state)
        self.log.end_trial(spec.mlflow_run_id, _STATE[state], tags if outcome else {REASON: "error"})
        value = f", val_acc {outcome['value']:.4f}" if outcome and outcome["value"] is not None else ""
        epochs = f" after {outcome['epochs']} epoch(s)" if outcome else ""
        print(f"{where}{' ' if where else ''}tune {self.search.key} trial {spec.number}: {_STATE[state]}{' (diverged)' if tags else ''}"
              f"{epochs}, lr {spec.params['lr']:.3g}, weight_decay {spec.params['weight_decay']:.3g}{value}",
              flush=True)

    def _fail_dead(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a coordinator that is gone are failed and their parameters queued again."""
        if not self.journal:
            optuna.storages.fail_stale_trials(study)  # heartbeats stopped: calls _abandoned
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if is_dead(t.user_attrs.get(OWNER), self.journal):
                try:
                    study.tell(t.number, state=TrialState.FAIL)
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                    continue  # another coordinator got there first
                self._abandoned(study, study.get_trials(deepcopy=False)[t.number])

    def _abandoned(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # A coordinator killed between creating the trial's MLflow run and noting its id in the study left
        # the run findable by its tags only.
        run_id = trial.user_attrs.get(TRIAL_RUN) or self.log.trial_run(trial.number)
        if run_id is None:  # killed between asking the trial and creating its run: every trial keeps a record
            run_id = self.log.start_trial(trial.number, trial.params, trial.user_attrs.get("retry_of"))
        self.log.end_trial(run_id, "failed", {REASON: "its process died"})
        retries = trial.user_attrs.get("retries", 0)
        if retries < MAX_RETRIES and trial.params:
            keep = {RECIPE: True} if trial.user_attrs.get(RECIPE) else {}  # the retried recipe stays the reference
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number),
                                                          "retries": retries + 1, **keep})
        print(f"tune {self.search.key} trial {trial.number}: its process died; "
              f"{'queued again' if retries < MAX_RETRIES else 'given up'}", flush=True)

    def finish(self) -> dict:
        study = self.study(0)
        summary = summarize(study, self.search, shown(self.url))
        self.log.finish(summary, importances(study))
        return summary


_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def summarize(study: optuna.Study | None, search: Search, storage: str) -> dict:
    """The tuned file's content (see paths.tuned_path); the recipe's values when no trial completed."""
    trials = study.get_trials(deepcopy=False) if study is not None else []
    counts = {name: sum(t.state == state for t in trials) for state, name in _STATE.items()}
    epochs = sum(t.user_attrs.get("epochs", len(t.intermediate_values)) for t in trials)
    opt = search.cell.train.optimizer
    out = {"tuned": False, "optimizer": {"lr": opt.lr, "weight_decay": opt.weight_decay}, "study": search.study,
           "storage": storage, "trials": counts, "best_val_acc": None, "epochs_trained": epochs}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        out |= {"tuned": True, "best_val_acc": best.value,
                "optimizer": {"lr": best.params["lr"], "weight_decay": best.params.get("weight_decay", opt.weight_decay)},
                "val_acc_range": [min(t.value for t in complete), max(t.value for t in complete)]}
    recipe = [t.value for t in complete if t.user_attrs.get(RECIPE)]
    out["recipe_val_acc"] = recipe[0] if recipe else None
    out["gain_over_recipe"] = out["best_val_acc"] - recipe[0] if recipe else None
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA importances; a parameter held fixed (weight decay at 0) has importance 0."""
    values = {"lr": 0.0, "weight_decay": 0.0}
    if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 2:
        with contextlib.suppress(RuntimeError, ValueError):  # e.g. every complete trial scored the same
            values |= optuna.importance.get_param_importances(study)
    return values
