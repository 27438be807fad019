"""The stores for several machines on a real PostgreSQL (tests/postgres.py): an `mlflow server` backed by
it with artifacts proxied by the server, the Optuna study in it, a whole `dvc repro` logging to both;
and two tune coordinators at once on one study there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from cifarbench.config import load_params
from cifarbench.data.splits import prepare_splits
from cifarbench.io import read_json
from cifarbench.tuning import ENV_STORAGE
from postgres import PASSWORD, USER, postgres  # noqa: F401 (the fixture)
from project import Project, ROOT, architecture, mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):  # noqa: F811
    """`mlflow server` on the `mlflow` database; artifacts proxied by it into a folder of its own."""
    folder = tmp_path_factory.mktemp("mlflow-pg")
    with mlflow_server(folder, postgres.url("mlflow"), "--artifacts-destination", str(folder / "artifacts")) as url:
        yield url, folder / "artifacts"


def experiment_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_pipeline_on_an_mlflow_server_and_optuna_on_postgresql(tmp_path, cifar_archive, postgres, server):  # noqa: F811
    url, artifacts = server
    archive, md5 = cifar_archive
    params = load_params(ROOT / "params.yaml")
    project = Project.create(tmp_path, preset="smoke", data__url=str(archive), data__md5=md5, data__val_size=100,
                             architectures={"lenet5": architecture(params, "lenet5")},
                             ablations={k: params["ablations"][k] for k in ("baseline", "flip")})
    storage = postgres.url("optuna")
    result = project.repro(MLFLOW_TRACKING_URI=url, **{ENV_STORAGE: storage})
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna").exists()  # nothing stored locally

    client = MlflowClient(tracking_uri=url)
    runs = experiment_runs(client, "cifarbench")
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    kinds = Counter(r.data.tags.get("cifarbench.kind", "train") for r in runs)
    assert kinds == {"train": 2, "tune": 1, "tune-trial": 2, "report": 1}, kinds
    training = {r.info.run_name: r for r in runs if "cifarbench.kind" not in r.data.tags}
    assert set(training) == {"lenet5/baseline/seed0", "lenet5/flip/seed0"}
    for name, run in training.items():
        tags, (arch, ablation, seed) = run.data.tags, name.split("/")
        assert {k: tags[k] for k in ("preset", "arch", "ablation", "seed", "cifarbench.current")} == \
            {"preset": "smoke", "arch": arch, "ablation": ablation, "seed": "0", "cifarbench.current": "true"}
        assert tags["host"] and tags["config_hash"] and tags["cell_key"] and tags["fast.threads"] == "1"
        assert tags["data_md5"] == md5 and tags["dvc_stage"] == "train"
        cell = read_json(tmp_path / "runs" / "smoke" / "cells" / arch / ablation / "result.json")
        assert run.data.metrics["test_acc"] == cell["seeds"]["0"]["test_acc"]
        assert {"val_acc", "train_loss", "test_acc_airplane"} <= run.data.metrics.keys()
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 2  # one per epoch
        # Proxied: the run's artifacts live on the server (mlflow-artifacts:), read back through it.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        local = client.download_artifacts(run.info.run_id, "seed0-confusion.json", str(tmp_path))
        confusion = json.loads(Path(local).read_text())
        assert len(confusion["classes"]) == 10 and sum(map(sum, confusion["confusion"])) == 200  # test_subset
    assert list(artifacts.rglob("seed0-confusion.json"))  # in the server's artifact folder

    tuned = read_json(tmp_path / "runs" / "smoke" / "tuned" / "lenet5.json")
    assert tuned["tuned"] and tuned["trials"] == {"complete": 2, "pruned": 0, "failed": 0}
    assert tuned["storage"] == f"postgresql+psycopg://{USER}:***@127.0.0.1:{postgres.port}/optuna"
    study = optuna.load_study(study_name=tuned["study"], storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert tuned["optimizer"]["lr"] == study.best_trial.params["lr"]
    # The password is in no output, log line or MLflow record.
    assert PASSWORD not in result.stdout + result.stderr
    assert not [p for p in (tmp_path / "runs").rglob("*.json") if PASSWORD in p.read_text()]
    assert not [r.info.run_name for r in runs if PASSWORD in json.dumps({**r.data.tags, **r.data.params})]


def coordinator(workdir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cifarbench.cli", "tune", "--arch", "lenet5"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_coordinators_share_one_study_on_postgresql(tmp_path, cifar_archive, postgres, server):  # noqa: F811
    """Two `cifarbench tune` processes at once, each with its worker processes, on one study in PostgreSQL:
    every trial ends in a final state and the budget is filled, no trial is drawn twice, and the one
    over-budget trial the tune stage allows per extra coordinator at most; one MLflow parent run."""
    url, _ = server
    prepare_splits(cifar_archive[0], tmp_path / "data" / "prepared", val_size=100, seed=0)
    tree = load_params(ROOT / "params.yaml")
    tree["preset"], budget = "smoke", 6
    # lenet5 and ablations tuned with the baseline's values: one study (the course's optimizers have their own)
    tree["architectures"] = {"lenet5": architecture(tree, "lenet5")}
    tree["ablations"] = {name: spec for name, spec in tree["ablations"].items() if spec.get("tune") != "own"}
    smoke = tree["presets"]["smoke"]
    smoke |= {"tune_trials": budget, "tune_epochs": 3, "train": {**smoke["train"], "epochs": 3}}
    tree["tracking"] = {"experiment": "two-coordinators", "uri": "sqlite:///unused.db"}
    tree["tune"] |= {"lr": {"momentum": [1.0e-3, 0.5]}, "startup_trials": 3, "pruner": {"name": "none"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    storage = postgres.create_database("optuna_two")
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, ENV_STORAGE: storage}

    first, second = coordinator(tmp_path, env), coordinator(tmp_path, env)
    for child in (first, second):
        out, _ = child.communicate(timeout=540)
        assert child.returncode == 0, out
        assert PASSWORD not in out

    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    print(f"{len(trials)} trials, per coordinator: {Counter(t.user_attrs['owner'] for t in trials)}")
    assert all(t.state == TrialState.COMPLETE for t in trials), Counter(t.state for t in trials)  # none lost
    assert budget <= len(trials) <= budget + 1  # 2 coordinators: at most 1 over budget
    assert len({t.number for t in trials}) == len(trials)
    assert len({(t.params["lr"], t.params["weight_decay"]) for t in trials}) == len(trials)  # none drawn twice
    tuned = read_json(tmp_path / "runs" / "smoke" / "tuned" / "lenet5.json")
    assert tuned["trials"]["complete"] == len(trials)

    client = MlflowClient(tracking_uri=url)
    runs = experiment_runs(client, "two-coordinators")
    trial_runs = [r for r in runs if r.data.tags.get("cifarbench.kind") == "tune-trial"]
    [parent] = [r for r in runs if r.data.tags.get("cifarbench.kind") == "tune"]
    assert sorted(r.info.run_name for r in trial_runs) == sorted(f"tune/lenet5/trial{t.number}" for t in trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in [*trial_runs, parent])
