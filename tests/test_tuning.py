"""The tune stage on tiny generated data: a real Optuna journal file and a real MLflow SQLite store in
a temp folder; a study that completes and prunes trials, survives SIGKILL, and shares its storage
between worker processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from cifarbench.config import load_params
from cifarbench.data.splits import prepare_splits
from cifarbench.errors import ConfigError
from cifarbench.pipeline import plan_stage, train_stage, tuned_path
from cifarbench.plan import load_plan, read_tuned, resolve_cell
from cifarbench.tuning import ENV_STORAGE, TuneConfig, make_search, tune_stage
from project import ROOT

CHILD = Path(__file__).with_name("tuning_child.py")
STORAGE = "optuna/studies.journal"  # params.yaml's default, relative to the working folder


def params(trials: int = 6, epochs: int = 3, **tune) -> dict:
    """The smoke preset, lenet5 only, with a wide lr range so that some trials do badly and get pruned."""
    tree = load_params(ROOT / "params.yaml")
    tree["preset"] = "smoke"
    tree["architectures"] = {"lenet5": tree["architectures"]["lenet5"]}
    smoke = tree["presets"]["smoke"]
    smoke |= {"tune_trials": trials, "tune_epochs": epochs, "train": {**smoke["train"], "epochs": epochs}}
    tree["tracking"] = {"experiment": "cifarbench", "uri": "sqlite:///mlflow.db"}
    tree["tune"] = {**tree["tune"], "lr": {"momentum": [1.0e-4, 2.0]}, "startup_trials": 3, **tune}
    return tree


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, cifar_archive) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data" / "prepared"
    prepare_splits(cifar_archive[0], out, val_size=100, seed=0)
    return out


@pytest.fixture
def workdir(tmp_path, prepared, monkeypatch) -> Path:
    shutil.copytree(prepared, tmp_path / "data" / "prepared")
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", ENV_STORAGE):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def study_trials(path: Path, name: str) -> list:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path / STORAGE)))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def tune_runs(path: Path, kind: str) -> list:
    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifarbench")
    return client.search_runs([experiment.experiment_id], f"tags.`cifarbench.kind` = '{kind}'", max_results=1000)


def test_tiny_study_completes_prunes_logs_and_feeds_the_train_stage(workdir):
    tree = params()
    tuned = tune_stage(tree, "lenet5")

    assert json.loads(tuned_path("smoke", "lenet5").read_text()) == tuned
    counts = tuned["trials"]
    assert counts["complete"] >= 1 and counts["pruned"] >= 1 and counts["failed"] == 0
    assert counts["complete"] + counts["pruned"] == 6
    assert tuned["tuned"] and tuned["storage"] == STORAGE and tuned["study"].startswith("smoke/lenet5/")
    assert counts["complete"] * 3 <= tuned["epochs_trained"] < 6 * 3  # pruning saved epochs
    trials = study_trials(workdir, tuned["study"])
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert tuned["best_val_acc"] == best.value
    assert tuned["optimizer"] == {"lr": best.params["lr"], "weight_decay": best.params["weight_decay"]}

    [parent] = tune_runs(workdir, "tune")
    assert parent.info.run_name == "tune/lenet5" and parent.info.status == "FINISHED"
    assert {k: parent.data.tags[k] for k in ("arch", "preset", "cifarbench.current")} == {
        "arch": "lenet5", "preset": "smoke", "cifarbench.current": "true"}
    assert float(parent.data.params["best.lr"]) == tuned["optimizer"]["lr"]
    assert float(parent.data.params["best.weight_decay"]) == tuned["optimizer"]["weight_decay"]
    metrics = parent.data.metrics
    assert metrics["best_val_acc"] == tuned["best_val_acc"] and metrics["trials_pruned"] == counts["pruned"]
    assert metrics["epochs_trained"] == tuned["epochs_trained"] and metrics["trials_failed"] == 0
    assert metrics["importance.lr"] + metrics["importance.weight_decay"] == pytest.approx(1.0)

    children = {r.info.run_name: r for r in tune_runs(workdir, "tune-trial")}
    assert set(children) == {f"tune/lenet5/trial{t.number}" for t in trials}
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for t in trials:
        run = children[f"tune/lenet5/trial{t.number}"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["state"] == {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}[t.state]
        assert float(run.data.params["lr"]) == t.params["lr"]
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert {m.step: m.value for m in history} == t.intermediate_values

    # A rerun finds the study done: no new trial, the same parent run, the same file.
    assert tune_stage(tree, "lenet5") == tuned
    assert [r.info.run_id for r in tune_runs(workdir, "tune")] == [parent.info.run_id]

    # The train stage reads the file: the baseline takes both values, no_l2 keeps its zero weight decay.
    plan = load_plan(tree)
    values = read_tuned(tuned_path("smoke", "lenet5"))
    assert resolve_cell(plan, "lenet5", "baseline", values).train.optimizer.lr == tuned["optimizer"]["lr"]
    no_l2 = resolve_cell(plan, "lenet5", "no_l2", values).train.optimizer
    assert (no_l2.lr, no_l2.weight_decay) == (tuned["optimizer"]["lr"], 0.0)
    (workdir / "data" / "prepared" / "info.json").write_text(json.dumps({"archive_md5": "x" * 32}))
    plan_stage(tree)
    metrics = train_stage(tree, "lenet5", "no_l2")
    assert metrics["status"] == "completed"


def test_a_preset_without_trials_writes_untuned_values(workdir):
    tuned = tune_stage(params(trials=0), "lenet5")
    assert tuned["tuned"] is False and tuned["trials"] == {"complete": 0, "pruned": 0, "failed": 0}
    assert read_tuned(tuned_path("smoke", "lenet5")) is None
    assert not (workdir / "mlflow.db").exists()


def test_the_environment_overrides_the_storage_and_bad_ranges_name_the_key(workdir, monkeypatch):
    monkeypatch.setenv(ENV_STORAGE, f"sqlite:///{workdir / 'optuna.db'}")
    tuned = tune_stage(params(trials=2, epochs=1), "lenet5")
    assert tuned["storage"].startswith("sqlite:///") and (workdir / "optuna.db").is_file()
    with pytest.raises(ConfigError, match="tune.weight_decay"):
        tune_stage(params(weight_decay=[1.0e-2, 1.0e-6]), "lenet5")
    with pytest.raises(ConfigError, match="sgd"):
        tune_stage(params(lr={"sgd": [0.01, 0.1]}), "lenet5")


def run_child(workdir: Path, tree: dict, workers: int = 1) -> subprocess.Popen:
    (workdir / "params.json").write_text(json.dumps(tree))
    # Keep the parent's PYTHONPATH: the child must import the same cifarbench as the test (a worktree's).
    paths = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen([sys.executable, str(CHILD), "params.json", "lenet5", str(workers)], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_study_resumes_without_lost_or_stuck_trials(workdir):
    tree = params(trials=4, epochs=4, pruner={"name": "none"})
    child = run_child(workdir, tree)
    journal = workdir / STORAGE

    def trials() -> list:
        if not journal.is_file():
            return []
        names = [s.study_name for s in optuna.get_all_study_summaries(
            optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))]
        return study_trials(workdir, names[0]) if names else []

    def mid_trial_after_a_complete_one() -> bool:
        if child.poll() is not None:
            raise AssertionError(child.stdout.read())
        states = trials()
        return (any(t.state == TrialState.COMPLETE for t in states) and states[-1].state == TrialState.RUNNING
                and len(states[-1].intermediate_values) == 1)  # 3 epochs to go: the kill lands mid-trial

    wait_for(mid_trial_after_a_complete_one)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert trials()[-1].state == TrialState.RUNNING  # left behind by the dead process

    tuned = tune_stage(tree, "lenet5")
    trials = study_trials(workdir, tuned["study"])
    [killed] = [t for t in trials if t.state == TrialState.FAIL]
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE
    assert tuned["trials"] == {"complete": 4, "pruned": 0, "failed": 1} and len(trials) == 5
    assert all(t.state != TrialState.RUNNING for t in trials)
    [parent] = tune_runs(workdir, "tune")  # the resumed study kept its parent run
    runs = {r.info.run_name: r for r in tune_runs(workdir, "tune-trial")}
    assert len(runs) == 5
    assert runs[f"tune/lenet5/trial{killed.number}"].data.tags["state"] == "failed"
    assert runs[f"tune/lenet5/trial{killed.number}"].info.status == "FAILED"


def test_worker_processes_share_one_study(workdir):
    """`tune --workers 2` (this process and a spawned one) and a second `tune` on the same storage."""
    tree = params(trials=6, epochs=3, pruner={"name": "none"})
    first, second = run_child(workdir, tree, workers=2), run_child(workdir, tree)
    for child in (first, second):
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0, out
    trials = study_trials(workdir, json.loads(tuned_path("smoke", "lenet5").read_text())["study"])
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.params["lr"], t.params["weight_decay"]) for t in trials}) == 6  # no trial drawn twice
    print(f"trials per worker process: {Counter(t.user_attrs['worker'] for t in trials)}")
    runs = tune_runs(workdir, "tune-trial")
    assert sorted(r.info.run_name for r in runs) == sorted(f"tune/lenet5/trial{k}" for k in range(6))
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1


def test_a_trial_never_trains_longer_than_the_cell_it_tunes():
    tree = params(trials=2, epochs=3)
    cfg = TuneConfig.model_validate(tree["tune"])
    assert make_search(tree, cfg, "lenet5").cell.train.epochs == 3
    tree["presets"]["smoke"]["tune_epochs"] = 8
    assert make_search(tree, cfg, "lenet5").cell.train.epochs == 3
    tree["presets"]["smoke"]["tune_epochs"] = 2
    assert make_search(tree, cfg, "lenet5").cell.train.epochs == 2
