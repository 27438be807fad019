"""Probes: a training run (runner.train_run) SIGKILLed at two exact points, then run again.

1. Between the creation of its MLflow run and the moment the run's id is recorded beside its checkpoint.
   Before: the run stayed RUNNING for ever (nothing resumes a run whose id was never written) beside the
   rerun's. Required: the rerun ends it KILLED (its owner process is gone) and no run stays RUNNING.
2. The same window on the train stage's local executor, hit by Ctrl-C: the coordinator stops the worker there.
   Before: the coordinator ended KILLED only the runs whose ids it found recorded; this one stayed RUNNING
   (under load `dvc repro`'s Ctrl-C probe caught it). Required: it is ended KILLED before the stage exits.
3. Just after its first epoch's checkpoint, with the machine's fast-path cache changed before the resume.
   Before: the resumed run switched to the cache's new choice halfway. Required: it keeps the checkpoint's
   choice, and records that one with its result and in MLflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from cifarbench.data.splits import prepare_splits
from cifarbench.runner import train_run
from run_child import EXPERIMENT, spec

pytestmark = pytest.mark.faults

HERE = Path(__file__).parent
KILLPOINT = HERE / "killpoint"  # its sitecustomize.py kills where PROBE_KILL_* says


@pytest.fixture(scope="module")
def prepared(cifar_archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_splits(cifar_archive[0], out, val_size=100, seed=0)
    return out


@pytest.fixture(autouse=True)
def one_thread_here(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_child(prepared: Path, folder: Path, *args: str, **point: str) -> subprocess.CompletedProcess:
    """run_child.py in its own process group, with the kill point `point` armed."""
    path = os.pathsep.join(filter(None, [str(KILLPOINT), str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(HERE / "run_child.py"), str(prepared), str(folder), *args],
                          env={**os.environ, "PYTHONPATH": path, **point}, capture_output=True, text=True,
                          timeout=300, start_new_session=True)


def killed_run(prepared: Path, folder: Path, *fast_path: str, **point: str) -> None:
    """run_child.py killed (the whole group) at the kill point `point`."""
    child = run_child(prepared, folder, *fast_path, **point)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr


def training_runs(folder: Path) -> dict:
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return {run.info.run_id: run for run in client.search_runs([experiment])}


def test_a_run_killed_before_its_id_was_recorded_is_ended_killed_by_the_rerun(prepared, tmp_path, capfd):
    killed_run(prepared, tmp_path, PROBE_KILL_RENAME="work/seed0.mlflow-run")
    assert not (tmp_path / "work/seed0.mlflow-run").exists()
    [orphan] = training_runs(tmp_path).values()
    assert orphan.info.status == "RUNNING"  # what the kill leaves

    result = train_run(spec(prepared, tmp_path))
    runs = training_runs(tmp_path)
    assert runs[orphan.info.run_id].info.status == "KILLED"
    assert runs[result["summary"]["run_id"]].info.status == "FINISHED"
    assert [r.info.run_id for r in runs.values() if r.info.status == "RUNNING"] == []
    assert f"MLflow run {orphan.info.run_id} (lenet5/baseline/seed0) was left RUNNING" in capfd.readouterr().err


def test_ctrl_c_before_a_run_recorded_its_id_ends_that_run_killed(prepared, tmp_path):
    child = run_child(prepared, tmp_path, "--executor", PROBE_INTERRUPT_RENAME="work/seed0.mlflow-run")
    assert child.returncode != 0 and "KeyboardInterrupt" in child.stderr, child.stdout + child.stderr
    assert not (tmp_path / "work/seed0.mlflow-run").exists()  # stopped inside the window
    [run] = training_runs(tmp_path).values()
    assert run.info.status == "KILLED"


def test_a_resumed_run_keeps_the_fast_paths_of_its_checkpoint(prepared, tmp_path):
    killed_run(prepared, tmp_path, "fp32", PROBE_KILL_AFTER_RENAME="work/seed0.pt")
    state = torch.load(tmp_path / "work/seed0.pt", weights_only=True)
    assert len(state["history"]) == 1 and state["status"] == "running"  # killed after epoch 1 of 2
    assert (state["fast_paths"]["autocast"], state["fast_paths"]["channels_last"]) == (None, False)

    result = train_run(spec(prepared, tmp_path, "bf16"))  # the machine's cache now says bf16
    assert [row["epoch"] for row in result["history"]] == [1, 2]  # resumed, not started over
    fast = result["summary"]["fast_paths"]
    assert (fast["autocast"], fast["channels_last"]) == (None, False)  # the checkpoint's choice
    tags = training_runs(tmp_path)[result["summary"]["run_id"]].data.tags
    assert (tags["fast.autocast"], tags["fast.channels_last"]) == ("None", "False")
