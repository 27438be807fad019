"""A tuning study's MLflow runs: a parent run `tune/<arch>` per study (kind TUNE; `tune/<arch>/<ablation>`
for an ablation's own study) holding the best values, the trial counts and the parameter importances, with
one nested run `tune/<arch>/trial<k>` (`tune/<arch>/<ablation>/trial<k>`) per trial (kind TUNE_TRIAL, tag
STATE) holding its per-epoch validation metrics. Both carry the tags arch, ablation and preset. Client API
only (no active run), so concurrent workers and trials never share state. Knows nothing of Optuna:
cifarbench.tuning hands it plain values.
"""

from __future__ import annotations

from collections.abc import Mapping

from cifarbench.tracking import tags as t
from cifarbench.tracking.runs import Tracker, log_metrics, mark_current

END_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "killed": "KILLED"}  # a trial's state -> MLflow's; else FAILED


class StudyLog:
    """The MLflow runs of the study `study` (its name) that tunes cell (`arch`, `ablation`) of `preset`;
    `label` names its runs: `arch` for the baseline's study, `arch/ablation` for an ablation's own."""

    def __init__(self, tracker: Tracker, study: str, preset: str, arch: str, ablation: str, label: str):
        self.client, self.experiment_id = tracker.client(), tracker.experiment_id
        self.study, self.preset, self.arch, self.ablation, self.label = study, preset, arch, ablation, label
        self.parent_run_id: str | None = None

    @property
    def identity(self) -> dict[str, str]:
        return t.study_identity(self.preset, self.arch, self.ablation)

    def logged_best(self, run_id: str | None) -> dict[str, str] | None:
        """The best values logged on the parent run `run_id` ({} before the study finished; None when the
        run is not in this experiment, e.g. a store that was reset)."""
        if not (run_id and self._exists(run_id)):
            return None
        params = self.client.get_run(run_id).data.params
        return {k.removeprefix("best."): v for k, v in params.items() if k.startswith("best.")}

    def open_parent(self, trials: int, epochs: int, storage: str) -> str:
        """A new parent run (not yet current) for a study of `trials` trials of `epochs` epochs."""
        from mlflow.entities import Param

        tags = {**t.provenance(), **self.identity, t.CURRENT: "false", t.STUDY: self.study, t.STORAGE: storage}
        run = self.client.create_run(self.experiment_id, run_name=f"tune/{self.label}", tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param("trials", str(trials)), Param("epochs", str(epochs))])
        self.parent_run_id = run.info.run_id
        return run.info.run_id

    def start_trial(self, number: int, params: Mapping[str, float], retry_of: int | None = None) -> str:
        """Trial `number`'s run under the parent, RUNNING until end_trial."""
        from mlflow.entities import Param

        tags = {t.PARENT: self.parent_run_id, t.KIND: t.TUNE_TRIAL, t.STATE: "running", t.ARCH: self.arch,
                t.ABLATION: self.ablation, t.PRESET: self.preset, t.STUDY: self.study, t.TRIAL: str(number),
                **({t.RETRY_OF: str(retry_of)} if retry_of is not None else {})}
        run = self.client.create_run(self.experiment_id, run_name=f"tune/{self.label}/trial{number}", tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def trial_run(self, number: int) -> str | None:
        """The MLflow run of trial `number` of this study, found by its tags."""
        runs = self.client.search_runs([self.experiment_id], t.query({t.STUDY: self.study, t.TRIAL: str(number),
                                                                      t.KIND: t.TUNE_TRIAL}))
        return runs[0].info.run_id if runs else None

    def end_trial(self, run_id: str | None, state: str, tags: Mapping[str, str]) -> None:
        """End a trial's run in `state` (complete, pruned, failed, killed), with `tags` (REASON, DIVERGED)."""
        if run_id and self._exists(run_id):
            for key, value in {t.STATE: state, **tags}.items():
                self.client.set_tag(run_id, key, value)
            self.client.set_terminated(run_id, END_STATUS.get(state, "FAILED"))

    def finish(self, summary: dict, importance: Mapping[str, float]) -> None:
        """Log the study's results (the tuned file's content) on the parent and make it the current tuning
        run of (preset, arch, ablation)."""
        run_id = self.parent_run_id
        spread = summary.get("val_acc_range") or [None, None]
        values = {"best_val_acc": summary["best_val_acc"], "epochs_trained": summary["epochs_trained"],
                  "recipe_val_acc": summary["recipe_val_acc"], "gain_over_recipe": summary["gain_over_recipe"],
                  "val_acc_min": spread[0], "val_acc_max": spread[1],
                  **{f"trials_{k}": v for k, v in summary["trials"].items()},
                  **{f"importance.{k}": v for k, v in importance.items()}}
        log_metrics(self.client, run_id, {k: v for k, v in values.items() if v is not None}, step=0)
        if summary["tuned"]:
            self._log_best(summary["optimizer"])
        self.client.set_tag(run_id, t.TUNED, str(summary["tuned"]).lower())
        mark_current(self.client, self.experiment_id, run_id, self.identity)
        self.client.set_terminated(run_id, "FINISHED")

    def _log_best(self, optimizer: Mapping[str, float]) -> None:
        """The best values as params of the parent (immutable in MLflow, so logged once). Coordinators
        sharing a study finish at about the same time and race to insert them (measured on PostgreSQL:
        the loser's insert failed on the primary key): the loser finds them logged and goes on."""
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        def missing() -> list:
            logged = self.client.get_run(self.parent_run_id).data.params
            return [Param(f"best.{k}", str(v)) for k, v in optimizer.items() if f"best.{k}" not in logged]

        try:
            if params := missing():
                self.client.log_batch(self.parent_run_id, params=params)
        except MlflowException:
            if missing():
                raise

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:  # MlflowException: a store that was reset
            return False


class TrialLog:
    """A trial's run as its worker sees it: one epoch's validation metrics at a time."""

    FIELDS = ("val_acc", "val_loss", "train_loss", "train_acc")

    def __init__(self, tracker: Tracker, run_id: str):
        self.client, self.run_id = tracker.client(), run_id

    def log_epoch(self, record) -> None:
        """One epoch of the trial (an engine EpochRecord), at its epoch as step."""
        log_metrics(self.client, self.run_id, {k: getattr(record, k) for k in self.FIELDS}, step=record.epoch)
