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

Execution: the tune stage is the coordinator of every architecture's study at once. It asks trials
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
import math
import os
import shutil
import socket
import sys
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

from cifarbench.config import MAX_SEED, ListAsTuple, Section, TrackingConfig
from cifarbench.data import load_split
from cifarbench.engine.registry import check_name, lookup
from cifarbench.errors import CifarbenchError, command_main
from cifarbench.execute import ExecutorConfig, running
from cifarbench.io import write_json_atomic
from cifarbench.paths import PREPARED, tuned_path
from cifarbench.pipeline import checked_cells, training_code_digest
from cifarbench.plan import BASELINE, Cell, PlanConfig, resolve_cell
from cifarbench.tracking import CURRENT, Tracker, mark_current, provenance

ENV_STORAGE = "CIFARBENCH_OPTUNA_STORAGE"
MAX_RETRIES = 2  # a trial whose process keeps dying (out of memory, say) is then given up
OWNER = "owner"  # trial user attr: host/pid@start-time of the coordinator that asked it
RECIPE = "recipe"  # trial user attr: the untuned recipe values (trial 0)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LOCK_TIMEOUT_S = 120.0  # a journal append takes milliseconds; a holder this slow is hung, not busy


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


def make_search(plan: PlanConfig, cfg: TuneConfig, arch: str, storage: str) -> Search:
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
    del storage  # where the study lives is not part of what it searches
    for key in ("lr", "weight_decay"):  # overridden by every trial
        what["cell"]["train"]["optimizer"].pop(key)
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return Search(cell, lr, wd, base.budget.tune_trials, f"{plan.preset}/{arch}/{digest}")


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


def _code_digest() -> str:
    """The training code and this module (the tune stage's code deps in dvc.yaml): when DVC reruns the
    stage because that code changed, the study starts afresh instead of returning the old result."""
    return hashlib.sha256(training_code_digest().encode() + Path(__file__).read_bytes()).hexdigest()


# --- storage ---------------------------------------------------------------------------------------------

def storage_url(cfg: TuneConfig) -> str:
    """CIFARBENCH_OPTUNA_STORAGE or tune.storage; a journal path made absolute (workers run elsewhere)."""
    url = os.environ.get(ENV_STORAGE) or cfg.storage
    return url if "://" in url else os.path.abspath(url)


def shown(url: str) -> str:
    """The storage as it may be logged: an RDB URL's password hidden."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, cfg: TuneConfig) -> optuna.storages.BaseStorage:
    if "://" in url:
        return _rdb_storage(url, cfg)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    try:  # reads the whole journal
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url, FlockLock(f"{url}.lock")))
    except ValueError as exc:  # json.JSONDecodeError, or Optuna's "Invalid log format."
        raise CifarbenchError(f"{url}: the Optuna journal is damaged inside ({exc}). Move it aside (`mv {url} "
                              f"{url}.broken`) and run again: the studies start over") from exc


def _rdb_storage(url: str, cfg: TuneConfig, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage; a trial whose heartbeat stopped is failed and queued again (Optuna's own callback).
    Coordinators that open a new, empty database at once race in Optuna's schema creation (measured on
    PostgreSQL: the loser fails on a duplicate `alembic_version` table), and no lock spans machines: the
    loser tries again once the winner has made the schema."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def storage() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(url, heartbeat_interval=cfg.heartbeat_s, grace_period=3 * cfg.heartbeat_s,
                                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                                              max_retry=MAX_RETRIES))

    for attempt in range(attempts - 1):
        with contextlib.suppress(IntegrityError, ProgrammingError):  # a duplicate table, type or version row
            return storage()
        time.sleep(0.5 * (attempt + 1))
    return storage()


class FlockLock:
    """The journal's write lock (Optuna's BaseJournalFileLock interface) as an fcntl lock, which the kernel
    releases when its holder dies: Optuna's default symlink lock, left behind by a SIGKILL mid-write,
    blocked every later writer (Optuna 5.0: its stale-lock timeout never fires). The holder writes its
    host/pid into the lock file, so a wait that times out can name it. Before each append the journal's
    torn last line, if any, is cut off (repair_journal)."""

    def __init__(self, path: str, timeout_s: float = LOCK_TIMEOUT_S, repair: bool = True):
        self.path, self.fd, self.timeout_s, self.repair = path, -1, timeout_s, repair

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise CifarbenchError(
                        f"{self.path}: the Optuna journal's lock was held for more than {self.timeout_s:.0f} s "
                        f"(by {holder}, host/pid). If that process hangs, stop it (its lock goes with it) and "
                        "run again") from None
                time.sleep(0.05)
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, _me().encode(), 0)
        if self.repair and self.path.endswith(".lock"):
            _cut_torn_line(Path(self.path.removesuffix(".lock")))
        return True

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)  # closing drops the lock


def repair_journal(url: str) -> str | None:
    """Cut off the torn last line of a journal file, under its lock; returns what was done, or None."""
    if "://" in url or not Path(url).is_file():
        return None
    lock = FlockLock(f"{url}.lock", repair=False)
    lock.acquire()
    try:
        return _cut_torn_line(Path(url))
    finally:
        lock.release()


def _cut_torn_line(path: Path) -> str | None:
    """A journal's last line cut short (disk full or a kill mid-append) is tolerated by Optuna only until
    the next append lands behind it; then every read raises. Cut it off, keeping the whole file as
    `<journal>.torn-<time>`. The caller holds the journal's lock."""
    if not path.is_file():
        return None
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0 or os.pread(f.fileno(), 1, size - 1) == b"\n":
            return None
        start = max(0, size - (1 << 20))  # journal lines are a few hundred bytes
        tail = os.pread(f.fileno(), size - start, start)
        keep = start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, aside)
        f.truncate(keep)
    message = (f"{path}: its last line was cut short ({size - keep} bytes: a write interrupted, e.g. disk full); "
               f"cut off, the whole file kept as {aside}")
    print(f"warning: {message}", file=sys.stderr, flush=True)
    return message


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
    """Whether the coordinator that asked a trial is gone. A journal serves one machine, so a trial of
    another host there is a previous life of this one (a container restarted under a new hostname)."""
    if owner is None:  # killed between ask and tagging, both done under the lock (one machine: journal)
        return journal
    host, process = owner.split("/", 1)
    if host != socket.gethostname():
        return journal
    return _process_id(int(process.split("@")[0])) != process


# --- one trial, in an executor's worker -----------------------------------------------------------------

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
    recipe: bool = False  # the recipe's own lr/wd: never pruned, the reference the tuned values must beat


def run_trial(spec: TrialSpec) -> dict:
    """Train one trial on the training subset, scored per epoch on the validation subset (never the test
    split); reports each epoch to the study, which may prune it. Returns {state, value, epochs, diverged}."""
    import torch

    from cifarbench.engine import fit
    from cifarbench.models import build_model_from

    _quiet()
    storage = open_storage(spec.storage, spec.tune)
    study = optuna.load_study(study_name=spec.search.study, storage=storage, pruner=make_pruner(spec.tune, spec.search))
    first = first_prune_epoch(spec.tune, spec.search)
    trial = optuna.Trial(study, spec.trial_id)
    cell, client = spec.search.cell, spec.tracker.client()
    train = cell.train.model_copy(update={"optimizer": cell.train.optimizer.model_copy(update=spec.params)})
    b = cell.budget
    data = load_split(spec.prepared, "train", b.train_subset), load_split(spec.prepared, "val", b.val_subset)
    epochs = [0]

    def on_epoch(record) -> None:
        epochs[0] = record.epoch
        StudyLog.log_epoch(client, spec.mlflow_run_id, record)
        trial.report(record.val_acc, record.epoch)
        if not spec.recipe and first <= record.epoch < train.epochs and trial.should_prune():
            raise optuna.TrialPruned()

    torch.manual_seed(spec.search.seed)
    model = build_model_from(cell.model)
    try:
        with get_heartbeat_thread(spec.trial_id, storage):
            result = fit(model, *data, train, seed=spec.search.seed, on_epoch=on_epoch)
    except optuna.TrialPruned:
        return {"state": "pruned", "value": None, "epochs": epochs[0], "diverged": False}
    if result.status == "diverged":  # pruned, so TPE learns to avoid the region and it is never the best
        return {"state": "pruned", "value": None, "epochs": result.stopped_epoch, "diverged": True}
    return {"state": "complete", "value": result.best_val_acc, "epochs": epochs[0], "diverged": False}


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


# --- the studies, in the coordinator --------------------------------------------------------------------

class Study:
    """One architecture's study as the coordinator sees it: asks trials within the budget, tells results."""

    def __init__(self, search: Search, cfg: TuneConfig, url: str, tracker: Tracker):
        self.search, self.cfg, self.url, self.tracker = search, cfg, url, tracker
        self.journal = "://" not in url
        self.storage = open_storage(url, cfg)
        self.log = StudyLog(tracker, search)
        with self.lock():
            study = self.study(0)
            if not study.get_trials(deepcopy=False):
                study.enqueue_trial(self.recipe, user_attrs={RECIPE: True})
            self._fail_dead(study)
            self.log.parent_run_id = self.log.open_parent(study, shown(url))

    @property
    def recipe(self) -> dict[str, float]:
        """The untuned values of the baseline (trial 0 of every study, so the gain of tuning is measured on
        the same seed, epochs and validation images)."""
        opt = self.search.cell.train.optimizer
        return {"lr": opt.lr, **({"weight_decay": opt.weight_decay} if self.search.weight_decay else {})}

    def lock(self):
        """Serializes budget checks and asks of the coordinators on this machine."""
        return machine_lock(self.url, self.search.study)

    def study(self, trial_number: int) -> optuna.Study:
        """The study with a sampler seeded by (sampler_seed, architecture, trial number): each architecture
        draws its own trials, a run from scratch is reproducible, and a resumed run never redraws a
        trial's parameters."""
        arch = int(hashlib.sha256(self.search.cell.arch.encode()).hexdigest()[:8], 16)
        seed = int(np.random.SeedSequence([self.cfg.sampler_seed, arch, trial_number]).generate_state(1)[0])
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
            trial.set_user_attr(OWNER, _me())
        params = {"lr": trial.params["lr"], "weight_decay": trial.params.get("weight_decay", 0.0)}
        run_id = self.log.start_trial(trial, params)
        trial.set_user_attr("mlflow_run_id", run_id)
        return TrialSpec(self.search, self.url, self.cfg, trial._trial_id, trial.number, params, prepared,
                         self.tracker, run_id, bool(trial.user_attrs.get(RECIPE)))

    def tell(self, spec: TrialSpec, outcome: dict | None) -> None:
        """Record a trial's outcome (None: it failed) in the study and its MLflow run."""
        study = self.study(0)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}[outcome["state"]] if outcome \
            else TrialState.FAIL
        tags = {"diverged": str(outcome["epochs"])} if outcome and outcome["diverged"] else {}
        if outcome:
            study._storage.set_trial_user_attr(spec.trial_id, "epochs", outcome["epochs"])
        with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
            study.tell(spec.number, outcome["value"] if state == TrialState.COMPLETE else None, state=state)
        self.log.end_trial(spec.mlflow_run_id, _STATE[state], tags if outcome else {"reason": "error"})
        value = f", val_acc {outcome['value']:.4f}" if outcome and outcome["value"] is not None else ""
        epochs = f" after {outcome['epochs']} epoch(s)" if outcome else ""
        print(f"tune {self.search.cell.arch} trial {spec.number}: {_STATE[state]}{' (diverged)' if tags else ''}"
              f"{epochs}, lr {spec.params['lr']:.3g}, weight_decay {spec.params['weight_decay']:.3g}{value}",
              flush=True)

    def _fail_dead(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a coordinator that is gone are failed and their parameters queued again."""
        if not self.journal:
            optuna.storages.fail_stale_trials(study)  # heartbeats stopped: calls _abandoned
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _is_dead(t.user_attrs.get(OWNER), self.journal):
                try:
                    study.tell(t.number, state=TrialState.FAIL)
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                    continue  # another coordinator got there first
                self._abandoned(study, study.get_trials(deepcopy=False)[t.number])

    def _abandoned(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # A coordinator killed between creating the trial's MLflow run and noting its id in the study left
        # the run findable by its tags only.
        run_id = trial.user_attrs.get("mlflow_run_id") or self.log.trial_run(trial.number)
        self.log.end_trial(run_id, "failed", {"reason": "its process died"})
        retries = trial.user_attrs.get("retries", 0)
        if retries < MAX_RETRIES and trial.params:
            keep = {RECIPE: True} if trial.user_attrs.get(RECIPE) else {}  # the retried recipe stays the reference
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number),
                                                          "retries": retries + 1, **keep})
        print(f"tune {self.search.cell.arch} trial {trial.number}: its process died; "
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
                "optimizer": {"lr": best.params["lr"], "weight_decay": best.params.get("weight_decay", 0.0)},
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


def tune_stage(plan: PlanConfig, cfg: TuneConfig, tracking: TrackingConfig, executor: ExecutorConfig,
               archs: list[str] | None = None) -> dict[str, dict]:
    """Tune the lr and weight decay of every architecture (or `archs`), all studies' trials fanned out
    over the executor; writes each tuned file and returns their contents by architecture."""
    _quiet()
    checked_cells(plan)  # bad params fail here, before any training
    url = storage_url(cfg)
    searches = [make_search(plan, cfg, arch, url) for arch in (archs or plan.architectures)]
    out = {}
    for search in [s for s in searches if s.trials == 0]:
        out[search.cell.arch] = _write_tuned(search, summarize(None, search, shown(url)))
        print(f"tune {search.cell.arch}: preset {plan.preset} does not tune; the recipe's lr and weight decay stand")
    searches = [s for s in searches if s.trials > 0]
    if not searches:
        return out
    tracker = Tracker.open(tracking)
    studies = {s.cell.arch: Study(s, cfg, url, tracker) for s in searches}
    print(f"tune ({plan.preset}): {len(studies)} studies in {shown(url)}, "
          f"{', '.join(f'{a} {s.trials} x {s.cell.train.epochs} ep' for a, s in ((s.cell.arch, s) for s in searches))}",
          flush=True)
    _run_studies(studies, executor, gpu=any(s.cell.train.device != "cpu" for s in searches))
    for arch, study in studies.items():
        summary = out[arch] = _write_tuned(study.search, study.finish())
        print(f"tune {arch}: {summary['trials']}, {summary['epochs_trained']} epochs; best val_acc "
              f"{summary['best_val_acc']} with lr {summary['optimizer']['lr']:.4g}, "
              f"weight_decay {summary['optimizer']['weight_decay']:.4g}", flush=True)
    return out


def _run_studies(studies: dict[str, Study], cfg: ExecutorConfig, gpu: bool) -> None:
    """Keep every slot of the executor busy with trials, taken from the studies in turn, until every
    budget is filled. A failed trial is recorded as failed (and the stage fails after the others end)."""
    prepared, specs, failed = PREPARED.resolve(), {}, []
    with running(cfg, gpu=gpu) as executor:
        print(f"tune: trials on {executor.where}", flush=True)
        try:
            open_studies = list(studies.values())
            while True:
                while open_studies and executor.pending() < executor.slots:
                    study = open_studies.pop(0)
                    spec = study.ask(prepared)
                    if spec is not None:
                        specs[(study.search.cell.arch, spec.number)] = spec
                        executor.submit((study.search.cell.arch, spec.number), run_trial, spec)
                        open_studies.append(study)
                if not executor.pending():
                    break
                done = executor.next_done()
                spec = specs.pop(done.key)
                studies[done.key[0]].tell(spec, done.result if done.ok else None)
                if not done.ok:
                    failed.append(f"{done.key[0]} trial {done.key[1]}: {done.error}")
        except BaseException:
            executor.close()
            for spec in specs.values():  # stay RUNNING in the study: the next run fails and requeues them
                studies[spec.search.cell.arch].log.end_trial(spec.mlflow_run_id, "killed", {})
            raise
    if failed:
        raise CifarbenchError(f"{len(failed)} tuning trial(s) failed; rerun to resume the studies:\n" + "\n".join(failed))


def _write_tuned(search: Search, summary: dict) -> dict:
    write_json_atomic(tuned_path(search.cell.preset, search.cell.arch), summary)
    return summary


# --- MLflow ----------------------------------------------------------------------------------------------

class StudyLog:
    """The study's MLflow runs: one parent, one nested run per trial. Uses MlflowClient only (no active
    run), so concurrent workers and trials never share state."""

    def __init__(self, tracker: Tracker, search: Search):
        self.client, self.experiment_id = tracker.client(), tracker.experiment_id
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

    @staticmethod
    def log_epoch(client, run_id: str, record) -> None:
        """One epoch of a trial (called in the trial's worker)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {"val_acc": record.val_acc, "val_loss": record.val_loss, "train_loss": record.train_loss,
                  "train_acc": record.train_acc}
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, record.epoch) for k, v in values.items()])

    def trial_run(self, number: int) -> str | None:
        """The MLflow run of trial `number` of this study, found by its tags."""
        runs = self.client.search_runs([self.experiment_id], f"tags.study = '{self.search.study}' and "
                                       f"tags.trial = '{number}' and tags.`cifarbench.kind` = 'tune-trial'")
        return runs[0].info.run_id if runs else None

    def end_trial(self, run_id: str | None, state: str, tags: dict[str, str]) -> None:
        if run_id and self._exists(run_id):
            for key, value in {"state": state, **tags}.items():
                self.client.set_tag(run_id, key, value)
            self.client.set_terminated(run_id, {"complete": "FINISHED", "pruned": "KILLED", "killed": "KILLED"}.get(state, "FAILED"))

    def finish(self, summary: dict, importance: dict[str, float]) -> None:
        """Log the study's results on the parent and make it the current tuning run of (preset, arch)."""
        from mlflow.entities import Metric

        now, run_id = int(time.time() * 1000), self.parent_run_id
        spread = summary.get("val_acc_range") or [None, None]
        values = {"best_val_acc": summary["best_val_acc"], "epochs_trained": summary["epochs_trained"],
                  "recipe_val_acc": summary["recipe_val_acc"], "gain_over_recipe": summary["gain_over_recipe"],
                  "val_acc_min": spread[0], "val_acc_max": spread[1],
                  **{f"trials_{k}": v for k, v in summary["trials"].items()},
                  **{f"importance.{k}": v for k, v in importance.items()}}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items() if v is not None])
        if summary["tuned"]:
            self._log_best(summary["optimizer"])
        self.client.set_tag(run_id, "tuned", str(summary["tuned"]).lower())
        mark_current(self.client, self.experiment_id, run_id,
                     f"tags.`cifarbench.kind` = 'tune' and tags.arch = '{self.arch}' and tags.preset = '{self.preset}'")
        self.client.set_terminated(run_id, "FINISHED")

    def _log_best(self, optimizer: dict[str, float]) -> None:
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


def _param(key: str, value) -> "object":
    from mlflow.entities import Param

    return Param(key, str(value))


# --- command line ----------------------------------------------------------------------------------------

def configure(parser) -> None:
    parser.add_argument("--arch", action="append", help="tune only this architecture (repeatable; default: all)")


def run(args) -> None:
    from cifarbench.params import load  # the root of the params, above this module in the layers

    params = load()
    tune_stage(params.plan, params.tune, params.tracking, params.executor, args.arch)


def tune_main(argv: list[str] | None = None) -> int:
    """The DVC stage `tune` (stages/tune.py)."""
    return command_main("stages/tune.py", "tune every architecture's lr and weight decay", configure, run, argv)
