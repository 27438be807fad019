"""Optuna tunes the learning rate and weight decay of each architecture's baseline cell, on the
validation split only (this module never loads the test split).

Study: one per (preset, architecture, search), named `<preset>/<arch>/<hash>`. The hash covers all that
decides a trial's result (the baseline cell at the tuning epochs, the data, the ranges, sampler and
pruner, the training code), so changing any of it starts a fresh study, while raising `tune_trials`
extends the old one.

Storage: `tune.storage` in params.yaml, or the CIFARBENCH_OPTUNA_STORAGE environment variable. A path
(relative to the working directory, the repo root under `dvc repro`) is an Optuna journal file: appends
under a file lock, so a killed process never corrupts it and workers on one machine share it. A URL
(postgresql://..., sqlite:///...) is an RDB storage with heartbeats, for workers on several machines.

Budget: trials run until `presets.<preset>.tune_trials` have ended complete or pruned; every worker then
waits for the others' trials, so each sees the finished study. A trial left running by a dead process
(on this machine: its pid is gone; on an RDB storage: its heartbeat stopped) is marked failed and its
parameters are queued again, at most MAX_RETRIES times. A trial whose loss stops being finite is pruned
and tagged `diverged`, so TPE learns to avoid its region and it can never be the best.

Which ablations take the tuned values (plan.py merges them before the ablation): all take the tuned lr;
all but `no_reg`, `no_l2` and `l1` (which set weight decay to 0) take the tuned weight decay. A baseline
without weight decay (lstm: Adam without it, as in its recipe) is tuned over lr only and keeps 0.

MLflow: a parent run `tune/<arch>` per study (kind `tune`) holding the best values and parameter
importances, with one nested run `tune/<arch>/trial<k>` per trial (kind `tune-trial`, tag `state`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import multiprocessing
import os
import socket
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.storages._heartbeat import get_heartbeat_thread  # what Study.optimize uses; we ask/tell
from optuna.trial import FrozenTrial, TrialState
from pydantic import AfterValidator, Field, PositiveFloat, field_validator

from cifarbench.config import MAX_SEED, ListAsTuple, Section, TrackingConfig, parse_section
from cifarbench.data import load_split
from cifarbench.data.commands import PREPARED
from cifarbench.engine.registry import check_name, lookup
from cifarbench.errors import CifarbenchError, ConfigError
from cifarbench.io import write_json_atomic
from cifarbench.pipeline import tuned_path
from cifarbench.plan import BASELINE, Cell, load_plan, resolve_cell
from cifarbench.tracking import CURRENT, mark_current, provenance, tracking_uri

ENV_STORAGE = "CIFARBENCH_OPTUNA_STORAGE"
MAX_RETRIES = 2  # a trial whose process keeps dying (out of memory, say) is then given up
POLL_S = 2.0  # how often a worker with nothing left to start checks the others' trials
WORKER = "worker"  # trial user attr: host/pid@start-time of the process running it
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _increasing(bounds: tuple[float, float]) -> tuple[float, float]:
    if not bounds[0] < bounds[1]:
        raise ValueError(f"a range is [low, high] with low < high, got {list(bounds)}")
    return bounds


LogRange = Annotated[tuple[PositiveFloat, PositiveFloat], ListAsTuple, AfterValidator(_increasing)]

PRUNERS = {
    # Keep the best 1/reduction_factor of trials at epochs min_epochs * reduction_factor^k (Li et al. 2020, ASHA).
    "successive_halving": lambda p, startup: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=p.min_epochs, reduction_factor=p.reduction_factor),
    # Stop a trial below the median of earlier trials at the same epoch.
    "median": lambda p, startup: optuna.pruners.MedianPruner(n_startup_trials=startup),
    "none": lambda p, startup: optuna.pruners.NopPruner(),
}


class PrunerConfig(Section):
    """Stops unpromising trials on their per-epoch validation accuracy."""

    name: str = "successive_halving"
    min_epochs: int = Field(1, ge=1, description="epochs every trial trains before it may be pruned")
    reduction_factor: int = Field(3, ge=2, description="successive_halving: 1 in this many trials goes on at each rung")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        return check_name(PRUNERS, v, "pruner")


class TuneConfig(Section):
    storage: str = Field("optuna/studies.journal", min_length=1, description="journal file path or RDB URL")
    sampler_seed: int = Field(0, ge=0, le=MAX_SEED)
    startup_trials: int = Field(4, ge=1, description="random trials before TPE (and the median pruner) use results")
    lr: dict[str, LogRange] = Field(min_length=1, description="log-uniform peak lr range per optimizer name")
    weight_decay: LogRange = (1.0e-6, 1.0e-2)
    pruner: PrunerConfig = PrunerConfig()
    heartbeat_s: int = Field(60, ge=1, description="RDB storages: trial heartbeat period; silent 3x this = dead")


@dataclass(frozen=True)
class Search:
    """What one study searches: the baseline cell at the tuning epochs, the ranges, how many trials."""

    cell: Cell  # lr and weight decay in cell.train.optimizer are replaced by each trial's
    lr: tuple[float, float]
    weight_decay: tuple[float, float] | None  # None: the baseline has no weight decay, kept at 0
    trials: int
    study: str

    @property
    def seed(self) -> int:
        return self.cell.seeds[0]  # every trial starts from the same initialization


def make_search(tree: dict, cfg: TuneConfig, arch: str) -> Search:
    plan = load_plan(tree)
    base = resolve_cell(plan, arch, BASELINE)
    # A trial never trains longer than the cell it tunes: its lr must suit that cell's schedule.
    epochs = min(base.budget.tune_epochs or base.train.epochs, base.train.epochs)
    cell = dataclasses.replace(base, train=base.train.model_copy(update={"epochs": epochs}))
    opt = cell.train.optimizer
    lr = lookup(cfg.lr, opt.name, f"params.yaml tune.lr range for {arch}'s optimizer")
    wd = cfg.weight_decay if opt.weight_decay > 0 else None
    info = PREPARED / "info.json"
    data = json.loads(info.read_text()) if info.is_file() else {}
    what = {"cell": cell.config(), "lr": lr, "wd": wd, "seed": base.seeds[0], "sampler_seed": cfg.sampler_seed,
            "startup": cfg.startup_trials, "pruner": cfg.pruner.model_dump(),
            "data": {k: data.get(k) for k in ("archive_md5", "val_size", "seed")}, "code": _code_digest()}
    for key in ("lr", "weight_decay"):  # overridden by every trial
        what["cell"]["train"]["optimizer"].pop(key)
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return Search(cell, lr, wd, base.budget.tune_trials, f"{plan.preset}/{arch}/{digest}")


def _code_digest() -> str:
    """The training code's content (the tune stage's code deps in dvc.yaml): when DVC reruns the stage
    because that code changed, the study starts afresh instead of returning the old result."""
    package = Path(__file__).parent
    files = sorted([*package.glob("engine/*.py"), *package.glob("models/*.py"), package / "plan.py", Path(__file__)])
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


# --- storage ---------------------------------------------------------------------------------------------

def storage_url(cfg: TuneConfig) -> str:
    return os.environ.get(ENV_STORAGE) or cfg.storage


def shown(url: str) -> str:
    """The storage as it may be logged: an RDB URL's password hidden."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, cfg: TuneConfig, on_stale) -> optuna.storages.BaseStorage:
    if "://" in url:
        return optuna.storages.RDBStorage(url, heartbeat_interval=cfg.heartbeat_s, grace_period=3 * cfg.heartbeat_s,
                                          heartbeat_stale_trial_callback=on_stale)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url, FlockLock(f"{url}.lock")))


class FlockLock:
    """The journal's write lock (Optuna's BaseJournalFileLock interface) as an fcntl lock, which the kernel
    releases when its holder dies: Optuna's default symlink lock, left behind by a SIGKILL mid-write,
    blocked every later writer (Optuna 5.0: its stale-lock timeout never fires)."""

    def __init__(self, path: str):
        self.path, self.fd = path, -1

    def acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def machine_lock(*names: str):
    """A lock shared by this machine's processes that name the same things (released if the holder dies)."""
    key = hashlib.sha256("|".join(names).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"cifarbench-tune-{key}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _process_id(pid: int) -> str | None:
    """`pid@start time` of a live process (None if it is gone), so a reused pid is not taken for the
    original process; just the pid where there is no /proc."""
    if Path("/proc").is_dir():
        with contextlib.suppress(OSError):
            return f"{pid}@{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"  # field 22
        return None
    try:
        os.kill(pid, 0)
        return str(pid)
    except OSError:
        return None


def _me() -> str:
    return f"{socket.gethostname()}/{_process_id(os.getpid())}"


def _is_dead(owner: str | None, journal: bool) -> bool:
    if owner is None:  # killed between ask and tagging, both done under the lock (one machine: journal)
        return journal
    host, process = owner.split("/", 1)
    return host == socket.gethostname() and _process_id(int(process.split("@")[0])) != process


# --- the study -------------------------------------------------------------------------------------------

class Tuner:
    """One worker's view of the study: asks trials within the budget, runs them, logs them to MLflow."""

    def __init__(self, tree: dict, arch: str, parent_run_id: str | None = None):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        self.cfg = parse_section(TuneConfig, tree.get("tune"), "tune")
        self.search = make_search(tree, self.cfg, arch)
        self.url = storage_url(self.cfg)
        self.journal = "://" not in self.url
        tracking = parse_section(TrackingConfig, tree.get("tracking"), "tracking")
        self.storage = open_storage(self.url, self.cfg, self._abandoned)
        self.pruner = PRUNERS[self.cfg.pruner.name](self.cfg.pruner, self.cfg.startup_trials)
        with machine_lock(tracking_uri(tracking)):  # two processes creating one MLflow SQLite store collide
            self.log = StudyLog(tracking, self.search)
        with self.lock():
            study = self.study(0)
            self.log.parent_run_id = parent_run_id or self.log.open_parent(study, shown(self.url))

    def lock(self):
        """Serializes budget checks and asks of the workers on this machine."""
        return machine_lock(os.path.abspath(self.url) if self.journal else self.url, self.search.study)

    def study(self, seed_index: int) -> optuna.Study:
        """The study with a sampler seeded by (sampler_seed, trial number): one worker from scratch is
        reproducible, and workers or a resumed run never redraw a trial's parameters."""
        seed = int(np.random.SeedSequence([self.cfg.sampler_seed, seed_index]).generate_state(1)[0])
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.cfg.startup_trials, multivariate=True,
                                             constant_liar=True)
        return optuna.create_study(storage=self.storage, study_name=self.search.study, direction="maximize",
                                   sampler=sampler, pruner=self.pruner, load_if_exists=True)

    def work(self, data) -> None:
        """Run trials until the budget is filled and no one else's trial is still running."""
        while True:
            with self.lock():
                study = self.study(0)
                self._fail_dead(study)
                trial = self._ask(study)
            if trial is not None:
                self._run(study, trial, data)
            elif any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
                time.sleep(POLL_S)
            else:
                return

    def _ask(self, study: optuna.Study) -> optuna.Trial | None:
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state for t in trials)
        taken = states[TrialState.COMPLETE] + states[TrialState.PRUNED] + states[TrialState.RUNNING]
        if not states[TrialState.WAITING] and taken >= self.search.trials:
            return None
        study = self.study(len(trials))
        space = {"lr": FloatDistribution(*self.search.lr, log=True)}
        if self.search.weight_decay:
            space["weight_decay"] = FloatDistribution(*self.search.weight_decay, log=True)
        trial = study.ask(space)
        trial.set_user_attr(WORKER, _me())
        return trial

    def _fail_dead(self, study: optuna.Study) -> None:
        if not self.journal:
            optuna.storages.fail_stale_trials(study)  # heartbeats; calls _abandoned
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _is_dead(t.user_attrs.get(WORKER), self.journal):
                try:
                    study.tell(t.number, state=TrialState.FAIL)
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                    continue  # another machine's worker got there first
                self._abandoned(study, study.get_trials(deepcopy=False)[t.number])

    def _abandoned(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose process died: close its MLflow run, queue its parameters again."""
        self.log.end_trial(trial.user_attrs.get("mlflow_run_id"), "failed", {"reason": "worker process died"})
        retries = trial.user_attrs.get("retries", 0)
        if retries < MAX_RETRIES and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number),
                                                          "retries": retries + 1})
        print(f"trial {trial.number}: its worker died; {'queued again' if retries < MAX_RETRIES else 'given up'}",
              flush=True)

    def _run(self, study: optuna.Study, trial: optuna.Trial, data) -> None:
        from cifarbench.engine import fit
        from cifarbench.models import build_model_from
        import torch

        cell = self.search.cell
        params = {"lr": trial.suggest_float("lr", *self.search.lr, log=True), "weight_decay": 0.0}
        if self.search.weight_decay:
            params["weight_decay"] = trial.suggest_float("weight_decay", *self.search.weight_decay, log=True)
        train = cell.train.model_copy(update={"optimizer": cell.train.optimizer.model_copy(update=params)})
        run_id = self.log.start_trial(trial, params)
        trial.set_user_attr("mlflow_run_id", run_id)
        epochs = [0]

        def on_epoch(record) -> None:
            epochs[0] = record.epoch
            self.log.log_epoch(run_id, record)
            trial.report(record.val_acc, record.epoch)
            if self.cfg.pruner.min_epochs <= record.epoch < train.epochs and trial.should_prune():
                raise optuna.TrialPruned()

        torch.manual_seed(self.search.seed)
        model = build_model_from(cell.model)
        state, value, tags = TrialState.PRUNED, None, {}
        try:
            with get_heartbeat_thread(trial._trial_id, self.storage):
                result = fit(model, data[0], data[1], train, seed=self.search.seed, on_epoch=on_epoch)
            if result.status == "diverged":
                epochs[0], tags = result.stopped_epoch, {"diverged": str(result.stopped_epoch)}
            else:
                state, value = TrialState.COMPLETE, result.best_val_acc
        except optuna.TrialPruned:
            pass
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            self.log.end_trial(run_id, "failed", {"reason": "error"})
            raise
        trial.set_user_attr("epochs", epochs[0])
        if tags:
            trial.set_user_attr("diverged_at_epoch", epochs[0])
        study.tell(trial, value, state=state)
        self.log.end_trial(run_id, _STATE[state], tags)
        shown_value = "" if value is None else f", val_acc {value:.4f}"
        print(f"trial {trial.number}: {_STATE[state]}{' (diverged)' if tags else ''} after {epochs[0]} epoch(s), "
              f"lr {params['lr']:.3g}, weight_decay {params['weight_decay']:.3g}{shown_value}", flush=True)


_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def summarize(study: optuna.Study | None, search: Search, storage: str) -> dict:
    """The tuned file's content (see pipeline.tuned_path); the recipe's values when no trial completed."""
    trials = study.get_trials(deepcopy=False) if study is not None else []
    counts = {name: sum(t.state == state for t in trials) for state, name in _STATE.items()}
    epochs = sum(t.user_attrs.get("epochs", len(t.intermediate_values)) for t in trials)
    opt = search.cell.train.optimizer
    out = {"tuned": False, "optimizer": {"lr": opt.lr, "weight_decay": opt.weight_decay}, "study": search.study,
           "storage": storage, "trials": counts, "best_val_acc": None, "epochs_trained": epochs}
    if counts["complete"]:
        best = study.best_trial
        out |= {"tuned": True, "best_val_acc": best.value,
                "optimizer": {"lr": best.params["lr"], "weight_decay": best.params.get("weight_decay", 0.0)}}
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA importances; a parameter held fixed (weight decay at 0) has importance 0."""
    values = {"lr": 0.0, "weight_decay": 0.0}
    if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 2:
        with contextlib.suppress(RuntimeError, ValueError):  # e.g. every complete trial scored the same
            values |= optuna.importance.get_param_importances(study)
    return values


def tune_stage(tree: dict, arch: str, *, workers: int = 1) -> dict:
    """Tune `arch`'s lr and weight decay with `workers` processes on this machine (this one included),
    then write the tuned file and return its content."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    cfg = parse_section(TuneConfig, tree.get("tune"), "tune")
    search = make_search(tree, cfg, arch)
    preset, out = search.cell.preset, tuned_path(search.cell.preset, arch)
    if search.trials == 0:
        write_json_atomic(out, summary := summarize(None, search, shown(storage_url(cfg))))
        print(f"tune {arch}: preset {preset} does not tune; the recipe's lr and weight decay stand", flush=True)
        return summary
    tuner = Tuner(tree, arch)
    print(f"tune {arch} (preset {preset}): study {search.study} in {shown(tuner.url)}, {search.trials} trials of "
          f"{search.cell.train.epochs} epochs, {workers} worker(s)", flush=True)
    data = _load_data(search.cell)
    if workers == 1:
        tuner.work(data)
    else:
        _work_in_parallel(tuner, data, tree, arch, workers)
    study = tuner.study(0)
    summary = summarize(study, search, shown(tuner.url))
    tuner.log.finish(summary, importances(study))
    write_json_atomic(out, summary)
    print(f"tune {arch}: {summary['trials']}, {summary['epochs_trained']} epochs; best val_acc "
          f"{summary['best_val_acc']} with lr {summary['optimizer']['lr']:.4g}, "
          f"weight_decay {summary['optimizer']['weight_decay']:.4g} -> {out}", flush=True)
    return summary


def _work_in_parallel(tuner: Tuner, data, tree: dict, arch: str, workers: int) -> None:
    """This process and workers - 1 spawned ones, each with an equal share of the cores."""
    import torch

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or SQLite state
    procs = [context.Process(target=_worker, args=(tree, arch, tuner.log.parent_run_id, workers, os.getcwd()),
                             daemon=True) for _ in range(workers - 1)]
    for p in procs:
        p.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(workers))
    try:
        tuner.work(data)
    finally:
        torch.set_num_threads(threads)
        for p in procs:
            p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise CifarbenchError(f"{len(failed)} tuning worker(s) failed (exit status {failed}); rerun to resume the study")


def _threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _worker(tree: dict, arch: str, parent_run_id: str, workers: int, cwd: str) -> None:
    import torch

    os.chdir(cwd)
    torch.set_num_threads(_threads(workers))
    tuner = Tuner(tree, arch, parent_run_id)
    tuner.work(_load_data(tuner.search.cell))


def _load_data(cell: Cell):
    """The preset's training and validation subsets (never the test split)."""
    return load_split(PREPARED, "train", cell.budget.train_subset), load_split(PREPARED, "val", cell.budget.val_subset)


# --- MLflow ----------------------------------------------------------------------------------------------

class StudyLog:
    """The study's MLflow runs: one parent, one nested run per trial. Uses MlflowClient only (no active
    run), so concurrent workers and trials never share state."""

    def __init__(self, tracking: TrackingConfig, search: Search):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri(tracking))
        experiment = self.client.get_experiment_by_name(tracking.experiment)
        self.experiment_id = (experiment.experiment_id if experiment else
                              _create_experiment(self.client, tracking.experiment))
        self.search = search
        self.arch, self.preset = search.cell.arch, search.cell.preset
        self.parent_run_id: str | None = None

    def open_parent(self, study: optuna.Study, storage: str) -> str:
        """The study's parent run, unless its best values are logged (MLflow params are immutable) and
        may change: a study extended by more trials after it finished gets a new parent run."""
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        if run_id and self._exists(run_id):
            logged = self.client.get_run(run_id).data.params.get("best.lr")
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in FINISHED for t in trials) >= self.search.trials
            if logged is None or (done and logged == str(study.best_trial.params["lr"])):
                return run_id
        tags = {**provenance(), "cifarbench.kind": "tune", "arch": self.arch, "preset": self.preset,
                CURRENT: "false", "study": self.search.study, "storage": storage}
        run = self.client.create_run(self.experiment_id, run_name=f"tune/{self.arch}", tags=tags)
        self.client.log_batch(run.info.run_id, params=[_param("trials", self.search.trials),
                                                       _param("epochs", self.search.cell.train.epochs)])
        study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
        return run.info.run_id

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:  # MlflowException: a store that was reset
            return False

    def start_trial(self, trial: optuna.Trial, params: dict[str, float]) -> str:
        tags = {"mlflow.parentRunId": self.parent_run_id, "cifarbench.kind": "tune-trial", "state": "running",
                "arch": self.arch, "preset": self.preset, "study": self.search.study, "trial": str(trial.number),
                **{k: str(v) for k, v in trial.user_attrs.items() if k in ("retry_of",)}}
        run = self.client.create_run(self.experiment_id, run_name=f"tune/{self.arch}/trial{trial.number}", tags=tags)
        self.client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in params.items()])
        return run.info.run_id

    def log_epoch(self, run_id: str, record) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {"val_acc": record.val_acc, "val_loss": record.val_loss, "train_loss": record.train_loss,
                  "train_acc": record.train_acc}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, record.epoch) for k, v in values.items()])

    def end_trial(self, run_id: str | None, state: str, tags: dict[str, str]) -> None:
        if run_id and self._exists(run_id):
            for key, value in {"state": state, **tags}.items():
                self.client.set_tag(run_id, key, value)
            self.client.set_terminated(run_id, {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED"))

    def finish(self, summary: dict, importance: dict[str, float]) -> None:
        """Log the study's results on the parent and make it the current tuning run of (preset, arch)."""
        from mlflow.entities import Metric, Param

        now, run_id = int(time.time() * 1000), self.parent_run_id
        values = {"best_val_acc": summary["best_val_acc"], "epochs_trained": summary["epochs_trained"],
                  **{f"trials_{k}": v for k, v in summary["trials"].items()},
                  **{f"importance.{k}": v for k, v in importance.items()}}
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
        logged = self.client.get_run(run_id).data.params
        params = [Param(f"best.{k}", str(v)) for k, v in summary["optimizer"].items() if f"best.{k}" not in logged]
        self.client.log_batch(run_id, metrics=metrics, params=params if summary["tuned"] else [])
        self.client.set_tag(run_id, "tuned", str(summary["tuned"]).lower())
        mark_current(self.client, self.experiment_id, run_id,
                     f"tags.`cifarbench.kind` = 'tune' and tags.arch = '{self.arch}' and tags.preset = '{self.preset}'")
        self.client.set_terminated(run_id, "FINISHED")


def _create_experiment(client, name: str) -> str:
    try:
        return client.create_experiment(name)
    except Exception:  # another worker created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def _param(key: str, value) -> "object":
    from mlflow.entities import Param

    return Param(key, str(value))


# --- command line ----------------------------------------------------------------------------------------

def configure(parser) -> None:
    parser.add_argument("--arch", required=True, help="architecture in params.yaml `architectures`")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1); "
                        "more processes or machines may also run `cifarbench tune` on the same storage")


def run(args) -> None:
    from cifarbench.config import load_params

    tune_stage(load_params(), args.arch, workers=args.workers)


def tune_main(argv: list[str]) -> int:
    """`stages/tune.py --arch A [--workers N]` (run in the warm worker, see cifarbench.worker)."""
    import argparse

    from cifarbench.cli import run_reporting_errors

    parser = argparse.ArgumentParser(prog="stages/tune.py", description="tune one architecture's lr and weight decay")
    configure(parser)
    return run_reporting_errors(run, parser.parse_args(argv))


