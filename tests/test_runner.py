"""cifarbench.runner.train_run on the local executor: two runs in two 1-thread worker processes give the
same numbers, bit for bit, as the same runs one after another in this process; both tracked in one real
MLflow SQLite store that the coordinator created before fanning out."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import pytest
import torch

from cifarbench.config import TrackingConfig
from cifarbench.data.splits import prepare_splits
from cifarbench.execute import ExecutorConfig, running
from cifarbench.params import parse
from cifarbench.plan import resolve_cell
from cifarbench.runner import RunSpec, train_run
from cifarbench.tracking import Tracker
from small_params import small_params

PARAMS = small_params()


@pytest.fixture(scope="module")
def prepared(cifar_archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_splits(cifar_archive[0], out, val_size=100, seed=0)
    return out


def specs(folder: Path, prepared: Path) -> list[RunSpec]:
    tree = copy.deepcopy(PARAMS)
    tree["preset"] = "smoke"
    tree["presets"]["smoke"]["seeds"] = [0, 1]
    cell = resolve_cell(parse(tree).plan, "lenet5", "baseline")
    tracker = Tracker.open(TrackingConfig(uri=f"sqlite:///{folder}/mlflow.db", experiment="runner"))
    tags = {"git_commit": "test", "preset": "smoke", "arch": "lenet5", "ablation": "baseline"}
    return [RunSpec(cell, seed, prepared, folder / "work", folder / "models", tracker, tags | {"seed": str(seed)})
            for seed in cell.seeds]


def test_runs_in_worker_processes_match_runs_in_this_process(tmp_path, prepared, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts in ./mlruns
    for folder in ("pool", "here"):
        (tmp_path / folder / "work").mkdir(parents=True)
    with running(ExecutorConfig(), gpu=False) as executor:
        assert executor.slots >= 1 and executor.threads == 1
        for spec in specs(tmp_path / "pool", prepared):
            executor.submit(spec.seed, train_run, spec)
        pooled = dict(sorted((d.key, d.result) for d in (executor.next_done() for _ in range(2))))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = {spec.seed: train_run(spec) for spec in specs(tmp_path / "here", prepared)}
    finally:
        torch.set_num_threads(previous)
    for seed in (0, 1):
        a, b = pooled[seed]["summary"], here[seed]["summary"]
        assert (a["test_acc"], a["test_loss"], a["best_val_acc"]) == (b["test_acc"], b["test_loss"], b["best_val_acc"])
        assert a["fast_paths"]["threads"] == b["fast_paths"]["threads"] == 1
        assert [r["val_loss"] for r in pooled[seed]["history"]] == [r["val_loss"] for r in here[seed]["history"]]
        assert (tmp_path / "pool" / "models" / f"seed{seed}.pt").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/pool/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["cifarbench.current"] == "true" for r in runs)
    assert {r.info.run_id for r in runs} == {pooled[s]["summary"]["run_id"] for s in (0, 1)}


def test_a_finished_run_returns_its_result_without_training(tmp_path, prepared, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    spec = specs(tmp_path, prepared)[0]
    first = train_run(spec)
    assert spec.file(".result.json").is_file()
    assert train_run(spec) == first
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.search_runs([client.get_experiment_by_name("runner").experiment_id])) == 1
