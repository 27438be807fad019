"""cifarbench.runner.run_cell: a cell's seeds, side by side in forked processes or one after another,
tracked in a real MLflow SQLite store."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import pytest
import torch

from cifarbench.config import TrackingConfig, load_params
from cifarbench.data.splits import prepare_splits
from cifarbench.plan import load_plan, resolve_cell
from cifarbench.runner import run_cell

PARAMS = load_params(Path(__file__).parents[1] / "params.yaml")


@pytest.fixture(scope="module")
def prepared(cifar_archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_splits(cifar_archive[0], out, val_size=100, seed=0)
    return out


def _cell():
    tree = copy.deepcopy(PARAMS)
    tree["preset"] = "smoke"
    tree["presets"]["smoke"]["seeds"] = [0, 1]
    return resolve_cell(load_plan(tree), "lenet5", "baseline")


def _run(tmp_path: Path, prepared: Path, threads: int) -> tuple[dict, list]:
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="runner")
    epochs = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        metrics = run_cell(_cell(), prepared=prepared, out_dir=tmp_path / "out", work_dir=tmp_path / "work",
                           tracking=tracking, tags={"git_commit": "test"},
                           on_epoch=lambda seed, row: epochs.append((seed, row["epoch"])))
    finally:
        torch.set_num_threads(previous)
    return metrics, epochs


def test_seeds_side_by_side_match_seeds_one_after_another(tmp_path, prepared, monkeypatch):
    """Two cores: each seed in its own 1-thread process. Same numbers as one 1-thread process doing both,
    every epoch reported to the parent, one MLflow run per seed in a store both children wrote to."""
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts in ./mlruns
    parallel, epochs = _run(tmp_path / "parallel", prepared, threads=2)
    sequential, _ = _run(tmp_path / "sequential", prepared, threads=1)
    assert sorted(epochs) == [(seed, e) for seed in (0, 1) for e in (1, 2)]
    for seed in ("0", "1"):
        a, b = parallel["seeds"][seed], sequential["seeds"][seed]
        assert a["test_acc"] == b["test_acc"] and a["test_loss"] == b["test_loss"]
        assert a["fast_paths"]["threads"] == b["fast_paths"]["threads"] == 1
    assert (tmp_path / "parallel/out/history.csv").read_text().count("\n") == 1 + 2 * 2
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/parallel/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["fast.threads"] == "1" for r in runs)
    assert {r.info.run_id for r in runs} == {parallel["seeds"][s]["run_id"] for s in ("0", "1")}
