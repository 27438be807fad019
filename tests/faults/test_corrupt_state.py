"""Probes: the state files a killed process or a full disk leaves damaged (the MLflow store half-made, the
Optuna journal with a torn last line or a lock held forever, a truncated checkpoint) and writes that fail
for want of space (checkpoints, the tracking store).

Required every time: an error naming the file or folder and what to do, or a repair that keeps a copy of
what it changed, and a rerun that finishes with the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution

from cifarbench.config import TrackingConfig
from cifarbench.engine import fit
from cifarbench.execute import ExecutorConfig
from cifarbench.errors import CifarbenchError
from cifarbench.params import parse
from cifarbench.tracking import Tracker
from cifarbench.tuning import FlockLock, TuneConfig, open_storage, tune_stage
from engine_helpers import comparable, make_split, one_torch_thread, tiny_model, train_config  # noqa: F401
from small_params import small_params

pytestmark = pytest.mark.faults

TUNE = TuneConfig(lr={"momentum": [0.01, 0.1]})


def smoke_params() -> dict:
    """The smoke preset, lenet5 and its baseline only, tuned 1 trial of 1 epoch."""
    tree = small_params(preset="smoke")
    tree["architectures"] = {"lenet5": tree["architectures"]["lenet5"]}
    tree["ablations"] = {"baseline": tree["ablations"]["baseline"]}
    tree["presets"]["smoke"] |= {"tune_trials": 1, "tune_epochs": 1}
    tree["tracking"] = {"experiment": "cifarbench", "uri": "sqlite:///mlflow.db"}
    return tree


# --- the MLflow store ------------------------------------------------------------------------------------

OPEN_STORE = """
    import sys
    from cifarbench.config import TrackingConfig, load_params
    from cifarbench.tracking import Tracker
    import mlflow.store.tracking.sqlalchemy_store  # imported before the clock starts: the kill lands in the migrations
    print("opening", flush=True)
    Tracker.open(TrackingConfig(uri=sys.argv[1]))
    print("opened", flush=True)
"""


def store_is_whole(path: Path) -> bool:
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    return "alembic_version" in tables and "runs" in tables and not any(t.startswith("_alembic_tmp_") for t in tables)


@pytest.mark.parametrize("after_s", [0.5, 1.5, 3.0])
def test_sigkill_while_the_store_is_created_leaves_none_or_a_whole_one(after_s, tmp_path):
    store = tmp_path / "mlflow.db"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(OPEN_STORE), f"sqlite:///{store}"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "opening"
    time.sleep(after_s)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert not store.exists() or store_is_whole(store)  # never the half-made store every later run failed on
    tracker = Tracker.open(TrackingConfig(uri=f"sqlite:///{store}"))  # the rerun
    assert store_is_whole(store) and tracker.experiment_id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mlflow.db")] == []  # the killed one's temp too


@pytest.mark.parametrize("make, why", [
    ("create table alembic_version (version_num varchar(32)); create table _alembic_tmp_runs (x)",
     r"left half-made by a process killed during MLflow's schema migrations \(table _alembic_tmp_runs\)"),
    ("create table experiments (x)", r"has no alembic_version table"),
    (None, r"is not a readable SQLite database"),
], ids=["alembic-temp-table", "no-alembic-version", "not-sqlite"])
def test_a_half_made_store_is_refused_naming_the_file_and_the_fix(make, why, tmp_path):
    store = tmp_path / "mlflow.db"
    if make is None:
        store.write_bytes(b"these are not the droids" * 100)
    else:
        with sqlite3.connect(store) as db:
            db.executescript(make)
    before = store.read_bytes()
    with pytest.raises(CifarbenchError, match=rf"the MLflow store {store} (was )?{why}.*mv {store} {store}\.broken"):
        Tracker.open(TrackingConfig(uri=f"sqlite:///{store}"))
    assert store.read_bytes() == before  # the user's file is not touched
    store.rename(tmp_path / "mlflow.db.broken")  # the fix the message gives
    assert Tracker.open(TrackingConfig(uri=f"sqlite:///{store}")).experiment_id


def test_a_store_killed_mid_write_is_rolled_back_not_refused(tmp_path):
    """SIGKILL during a write transaction leaves a hot rollback journal beside the store. Any SQLite client
    rolls it back on open; the store check used to open read-only, could not, and told the user to move a
    whole store aside ('attempt to write a readonly database'), hiding every run in it."""
    store = tmp_path / "mlflow.db"
    experiment = Tracker.open(TrackingConfig(uri=f"sqlite:///{store}")).experiment_id
    writer = textwrap.dedent("""
        import os, signal, sqlite3, sys
        db = sqlite3.connect(sys.argv[1], isolation_level=None)
        db.execute("pragma cache_size = 2")  # spill pages to the file mid-transaction
        db.execute("begin")
        db.execute("create table junk (x blob)")
        for _ in range(200):
            db.execute("insert into junk values (randomblob(4000))")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", writer, str(store)], check=False)
    journal = tmp_path / "mlflow.db-journal"
    assert journal.is_file() and journal.stat().st_size > 0  # the hot journal the kill left
    assert Tracker.open(TrackingConfig(uri=f"sqlite:///{store}")).experiment_id == experiment
    with sqlite3.connect(store) as db:
        assert not db.execute("select name from sqlite_master where name = 'junk'").fetchall()  # rolled back


# --- the Optuna journal ----------------------------------------------------------------------------------

def a_study_with_one_trial(journal: Path) -> optuna.Study:
    study = optuna.create_study(storage=open_storage(str(journal), TUNE), study_name="s", direction="maximize")
    trial = study.ask({"lr": FloatDistribution(0.01, 0.1, log=True)})
    study.tell(trial, 0.5)
    return study


def test_a_torn_last_line_is_cut_off_with_a_copy_kept(tmp_path):
    journal = tmp_path / "studies.journal"
    a_study_with_one_trial(journal)
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 4, "worker_id": "x", "study_id": 0, "dist')  # disk full mid-append
    torn = journal.read_bytes()

    study = optuna.load_study(study_name="s", storage=open_storage(str(journal), TUNE))
    study.tell(study.ask({"lr": FloatDistribution(0.01, 0.1, log=True)}), 0.6)  # appends: repairs first
    [copy] = tmp_path.glob("studies.journal.torn-*")
    assert copy.read_bytes() == torn and journal.read_bytes().startswith(whole)
    fresh = optuna.load_study(study_name="s", storage=open_storage(str(journal), TUNE))
    assert [t.value for t in fresh.get_trials()] == [0.5, 0.6]


def test_damage_inside_the_journal_stops_tuning_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFARBENCH_OPTUNA_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    journal = tmp_path / "optuna" / "studies.journal"
    journal.parent.mkdir()
    journal.write_text('{"op_code": 0, "worker_id": "w", "study_name": "x", "directions": [1]}\n{"op_co\n'
                       '{"op_code": 0, "worker_id": "w", "study_name": "y", "directions": [1]}\n')
    with pytest.raises(CifarbenchError, match=rf"{journal}: the Optuna journal is damaged inside.*mv {journal}"):
        params = parse(smoke_params())
        tune_stage(params.plan, params.tune, params.tracking, ExecutorConfig(), ["lenet5"])


HOLD_LOCK = """
    import sys, time
    from cifarbench.tuning import FlockLock
    FlockLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_too_long_is_an_error_naming_the_lock_and_its_holder(tmp_path):
    lock = tmp_path / "studies.journal.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(CifarbenchError, match=rf"{lock}: the Optuna journal's lock was held for more than 1 s "
                                                  rf"\(by [^/]+/{holder.pid}@\d+, host/pid\)"):
            FlockLock(str(lock), timeout_s=1).acquire()
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    mine = FlockLock(str(lock), timeout_s=1)
    assert mine.acquire()  # the holder gone, the lock is free again
    mine.release()


# --- checkpoints -----------------------------------------------------------------------------------------

class Killed(Exception):
    pass


def stop_after_epoch(n: int):
    def on_epoch(record) -> None:
        if record.epoch == n:
            raise Killed  # as a kill after the checkpoint of epoch n was written
    return on_epoch


def test_a_truncated_checkpoint_is_moved_aside_and_the_run_starts_over(tmp_path):
    train, val, cfg = make_split(200), make_split(100, seed=1), train_config(epochs=3)
    clean = fit(tiny_model(), train, val, cfg, seed=0)
    ckpt = tmp_path / "seed0.pt"
    with pytest.raises(Killed):
        fit(tiny_model(), train, val, cfg, seed=0, checkpoint=ckpt, on_epoch=stop_after_epoch(1))
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # the disk gave out mid-write
    with pytest.warns(UserWarning, match=rf"{ckpt}: unreadable checkpoint .*moved aside to {ckpt}\.corrupt-"):
        resumed = fit(tiny_model(), train, val, cfg, seed=0, checkpoint=ckpt)
    assert comparable(resumed.history) == comparable(clean.history)
    assert len(list(tmp_path.glob("seed0.pt.corrupt-*"))) == 1


FULL_DISK_FIT = """
    import resource, sys
    sys.path.insert(0, sys.argv[2])
    from engine_helpers import make_split, tiny_model, train_config
    from cifarbench.engine import fit
    from cifarbench.errors import CifarbenchError
    limit = int(sys.argv[3])  # bytes: a longer file fails with EFBIG, as on a full disk
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        fit(tiny_model(), make_split(200), make_split(100, seed=1), train_config(epochs=3), seed=0, checkpoint=sys.argv[1])
    except CifarbenchError as exc:
        print(f"error: {exc}")
        sys.exit(2)
"""


def test_a_full_disk_for_checkpoints_names_the_folder_and_a_rerun_finishes(tmp_path):
    ckpt = tmp_path / "checkpoints" / "seed0.pt"
    tests = str(Path(__file__).parents[1])
    full = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK_FIT), str(ckpt), tests, "4096"], capture_output=True, text=True,
        timeout=300)
    assert full.returncode == 2, full.stderr
    assert f"could not write the checkpoint seed0.pt into {ckpt.parent}" in full.stdout and "disk full" in full.stdout
    assert not ckpt.exists() and list(ckpt.parent.iterdir()) == []  # no partial file that looks complete
    freed = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK_FIT), str(ckpt), tests, "0"],
                           capture_output=True, text=True, timeout=300)
    assert freed.returncode == 0, freed.stdout + freed.stderr
    assert torch.load(ckpt, weights_only=True)["status"] != "running"


FULL_DISK_STORE = """
    import resource, sys
    from cifarbench.config import TrackingConfig, load_params
    from cifarbench.errors import CifarbenchError
    from cifarbench.tracking import Tracker
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # MLflow's empty store is larger
    try:
        Tracker.open(TrackingConfig(uri=sys.argv[1]))
    except CifarbenchError as exc:
        print(f"error: {exc}")
        sys.exit(2)
"""


def test_a_full_disk_for_the_tracking_store_names_the_folder_and_a_rerun_finishes(tmp_path):
    store = tmp_path / "tracking" / "mlflow.db"
    full = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK_STORE), f"sqlite:///{store}"],
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stdout + full.stderr
    assert f"disk full (or failing) while creating the MLflow store {store} in {store.parent}: free space" in full.stdout
    assert sorted(p.name for p in store.parent.iterdir()) == []  # neither a half store nor its temp
    assert Tracker.open(TrackingConfig(uri=f"sqlite:///{store}")).experiment_id  # space freed: the rerun
