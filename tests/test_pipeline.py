"""`dvc repro` of the smoke preset in a real git + DVC repo, on a generated archive served over HTTP,
tracked in a real MLflow store (SQLite, and a real `mlflow server` on loopback)."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from mlflow.tracking import MlflowClient

from cifarbench.config import load_params
from cifarbench.errors import ConfigError
from cifarbench.io import read_json
from cifarbench.pipeline import plan_stage
from project import ROOT, Project, mlflow_server

pytestmark = pytest.mark.slow

# A cross-section of the matrix that exercises every kind of cell: a plain CNN without batch norm
# (lenet5: no_bn not applicable), a normalized CNN (resnet18) and a recurrent net (lstm: no BN switch).
ARCHS = ["lenet5", "resnet18", "lstm"]
ABLATIONS = ["baseline", "no_reg", "no_bn", "early_stop", "crop"]


def trimmed(params: dict) -> dict:
    return {"architectures": {a: params["architectures"][a] for a in ARCHS},
            "ablations": {a: params["ablations"][a] for a in ABLATIONS}}


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, cifar_archive, http_root):
    """The smoke pipeline, run once: (project, output of the first `dvc repro`)."""
    archive, md5 = cifar_archive
    root, base = http_root
    shutil.copy(archive, root / "cifar-10-python.tar.gz")
    path = tmp_path_factory.mktemp("smoke")
    params = load_params(ROOT / "params.yaml")
    project = Project.create(path, preset="smoke", data__url=f"{base}/cifar-10-python.tar.gz", data__md5=md5,
                             data__val_size=100, **trimmed(params))
    started = time.perf_counter()
    result = project.repro()
    print(f"smoke dvc repro: {len(ARCHS) * len(ABLATIONS)} cells in {time.perf_counter() - started:.1f} s")
    return project, result


def client_for(project: Project) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project.path / 'mlflow.db'}")


def current_runs(client: MlflowClient) -> list:
    """The current training runs (tuning studies, tagged cifarbench.kind, left out)."""
    experiment = client.get_experiment_by_name("cifarbench")
    runs = client.search_runs([experiment.experiment_id], "tags.`cifarbench.current` = 'true'", max_results=1000)
    return [r for r in runs if "cifarbench.kind" not in r.data.tags]


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_every_cell_has_metrics_and_one_current_mlflow_run_per_seed(smoke):
    project, result = smoke
    assert "Running stage 'download'" in result.stdout and "Running stage 'prepare'" in result.stdout
    cells = project.path / "runs" / "smoke" / "cells"
    runs = {r.info.run_name: r for r in current_runs(client_for(project))}
    commit = project.run("git", "rev-parse", "HEAD").stdout.strip()
    for arch in ARCHS:
        for ablation in ABLATIONS:
            metrics = read_json(cells / arch / ablation / "metrics.json")
            if (arch, ablation) in {("lenet5", "no_bn"), ("lstm", "no_bn")}:
                assert metrics["status"] == "not_applicable"
                assert f"{arch}/{ablation}/seed0" not in runs
                continue
            assert metrics["status"] == "completed" and metrics["n_seeds"] == 1
            run = runs[f"{arch}/{ablation}/seed0"]
            tags, params = run.data.tags, run.data.params
            assert {k: tags[k] for k in ("arch", "ablation", "seed", "preset")} == {
                "arch": arch, "ablation": ablation, "seed": "0", "preset": "smoke"}
            assert tags["dvc_stage"] == f"train@{arch}-{ablation}"
            assert tags["git_commit"] == commit and len(tags["data_md5"]) == 32
            assert tags["status"] == "completed" and tags["fast.device"] == "cpu"
            assert params["train.epochs"] == "2" and params["model.name"] == arch and params["data.train_subset"] == "200"
            assert run.data.metrics["test_acc"] == pytest.approx(metrics["seeds"]["0"]["test_acc"])
            history = client_for(project).get_metric_history(run.info.run_id, "val_acc")
            assert sorted(m.step for m in history) == [1, 2]
            assert (cells / arch / ablation / "models" / "seed0.pt").is_file()
            assert len((cells / arch / ablation / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert runs["resnet18/no_bn/seed0"].data.params["model.batch_norm"] == "False"


def test_second_repro_does_nothing_quickly(smoke):
    project, _ = smoke
    started = time.perf_counter()
    again = project.repro()
    seconds = time.perf_counter() - started
    print(f"no-op dvc repro: {seconds:.1f} s")
    assert stages_run(again.stdout) == []
    assert "Data and pipelines are up to date" in again.stdout


def test_bad_params_fail_before_training(smoke, monkeypatch):
    project, _ = smoke
    monkeypatch.chdir(project.path)
    params = project.params
    for change, message in [
        ({"architectures": {**params["architectures"], "resnet99": {}}}, "unknown model 'resnet99'"),
        ({"recipe": {**params["recipe"], "train": {**params["recipe"]["train"], "optimizer": {"name": "momentum", "lr": -0.1}}}},
         r"train.optimizer.lr .*Input should be greater than 0"),
        ({"recipe": {**params["recipe"], "model": {"widht": 1}}}, r"model.widht .*unknown key"),
        ({"presets": {**params["presets"], "smoke": {**params["presets"]["smoke"], "seeds": "0"}}}, r"presets.smoke.seeds"),
    ]:
        with pytest.raises(ConfigError, match=message):
            plan_stage({**params, **change})
    before = len(current_runs(client_for(project)))
    project.set_params(ablations__crop__train__augment__policy="cropp")
    failed = project.repro("train@lenet5-crop", check=False)
    project.set_params(ablations__crop__train__augment__policy="crop")
    assert failed.returncode != 0
    assert "ablations.crop" in failed.stderr + failed.stdout and "cropp" in failed.stderr + failed.stdout
    assert len(current_runs(client_for(project))) == before


def test_changing_one_ablation_reruns_only_its_cells(smoke):
    project, _ = smoke
    client = client_for(project)
    old = {r.info.run_name: r.info.run_id for r in current_runs(client)}
    project.set_params(ablations__crop__train__augment__crop_padding=2)
    rerun = project.repro()
    assert sorted(stages_run(rerun.stdout)) == ["plan", "report", *(f"train@{a}-crop" for a in sorted(ARCHS))]
    now = {r.info.run_name: r.info.run_id for r in current_runs(client)}
    assert now.keys() == old.keys()  # still exactly one current run per (arch, ablation, seed)
    changed = {name for name in now if now[name] != old[name]}
    assert changed == {f"{a}/crop/seed0" for a in ARCHS}
    replaced = client.get_run(old["lenet5/crop/seed0"])
    assert replaced.data.tags["cifarbench.current"] == "false"
    assert replaced.data.tags["cifarbench.superseded_by"] == now["lenet5/crop/seed0"]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")) as url:
        yield url


def test_pipeline_logs_to_an_mlflow_server(tmp_path, cifar_archive, server_url):
    archive, md5 = cifar_archive
    params = load_params(ROOT / "params.yaml")
    project = Project.create(tmp_path, preset="smoke", data__url=str(archive), data__md5=md5, data__val_size=100,
                             architectures={"lenet5": params["architectures"]["lenet5"]},
                             ablations={k: params["ablations"][k] for k in ("baseline", "flip")})
    project.repro(MLFLOW_TRACKING_URI=server_url)
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=server_url)
    runs = {r.info.run_name: r for r in current_runs(client)}
    assert set(runs) == {"lenet5/baseline/seed0", "lenet5/flip/seed0"}
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in runs.values())
    artifacts = [a.path for a in client.list_artifacts(runs["lenet5/flip/seed0"].info.run_id)]
    assert "seed0-confusion.json" in artifacts
