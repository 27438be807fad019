"""`dvc repro` of the smoke preset's whole matrix in a real git + DVC repo, on a generated archive served
over HTTP, its runs on the local executor's worker processes, tracked in a real MLflow store (SQLite, and a
real `mlflow server` on loopback)."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
from mlflow.tracking import MlflowClient

from cifarbench.config import load_params
from cifarbench.errors import ConfigError
from cifarbench.io import read_json
from cifarbench.params import parse
from cifarbench.plan import all_cells
from project import Project, ROOT, architecture, mlflow_server

pytestmark = pytest.mark.slow

@pytest.fixture(scope="session")
def smoke(tmp_path_factory, cifar_archive, http_root):
    """The smoke pipeline, run once: (project, output of the first `dvc repro`)."""
    archive, md5 = cifar_archive
    root, base = http_root
    shutil.copy(archive, root / "cifar-10-python.tar.gz")
    path = tmp_path_factory.mktemp("smoke")
    project = Project.create(path, preset="smoke", data__url=f"{base}/cifar-10-python.tar.gz", data__md5=md5,
                             data__val_size=100)
    started = time.perf_counter()
    result = project.repro()
    print(f"smoke dvc repro, whole matrix: {time.perf_counter() - started:.1f} s")
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
    assert stages_run(result.stdout) == ["download", "prepare", "tune", "train", "report"]
    runs = {r.info.run_name: r for r in current_runs(client_for(project))}
    commit = project.run("git", "rev-parse", "HEAD").stdout.strip()
    cells = all_cells(parse(project.params).plan)
    params = project.params
    assert len(cells) == len(params["architectures"]) * len(params["ablations"])  # every (arch, ablation)
    assert sum(c.not_applicable is None for c in cells) == 104  # what smoke runs: the course's groups on vgg11 only
    for cell in cells:
        metrics = read_json(project.path / "runs" / "smoke" / "metrics" / cell.arch / f"{cell.ablation}.json")
        folder = project.path / "runs" / "smoke" / "cells" / cell.arch / cell.ablation
        if cell.not_applicable:
            assert metrics["status"] == "not_applicable"
            assert f"{cell.name}/seed0" not in runs
            continue
        run = runs[f"{cell.name}/seed0"]
        tags, params = run.data.tags, run.data.params
        # 2 epochs on 200 images: some batch-norm networks have learned (training accuracy well above chance)
        # but their running statistics are not settled, so they predict one class: named, never averaged
        trained = tags["trained"] == "true"
        assert metrics["status"] == "completed" and (metrics["n_seeds"], metrics["did_not_train"]) == (int(trained), int(not trained))
        assert trained == (not tags["did_not_train"]), tags["did_not_train"]
        if cell.arch == "lstm":  # Adam, no batch norm: the tiny learnable archive trains it in 2 epochs
            assert trained, f"{cell.name}: {tags['did_not_train']}"
        assert {k: tags[k] for k in ("arch", "ablation", "seed", "preset")} == {
            "arch": cell.arch, "ablation": cell.ablation, "seed": "0", "preset": "smoke"}
        assert tags["dvc_stage"] == "train" and tags["host"] and tags["fast.threads"] == "1"
        assert tags["git_commit"] == commit and len(tags["data_md5"]) == 32
        assert tags["status"] == "completed" and tags["fast.device"] == "cpu"
        assert tags["cell_key"] == read_json(folder / "result.json")["key"]
        assert params["train.epochs"] == "2" and params["model.name"] == cell.arch and params["data.train_subset"] == "200"
        expected_mean = pytest.approx(run.data.metrics["test_acc"]) if trained else None
        assert metrics["test_acc_mean"] == expected_mean
        history = client_for(project).get_metric_history(run.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == [1, 2]
        assert (folder / "models" / "seed0.pt").is_file()
        assert len((folder / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert runs["resnet18/no_bn/seed0"].data.params["model.norm"] == "none"
    assert runs["vgg11/norm_group/seed0"].data.params["model.norm"] == "group"
    assert runs["vgg11/adam/seed0"].data.params["train.optimizer.name"] == "adam"
    assert "resnet18/norm_group/seed0" not in runs  # not in smoke for resnet18 (params.yaml, cost)
    assert not list((project.path / "runs" / "checkpoints").rglob("*.pt"))  # finished cells leave none
    shown = project.run("dvc", "metrics", "show").stdout
    assert "runs/smoke/metrics/resnet18/crop.json" in shown and "test_acc_mean" in shown


def test_second_repro_does_nothing_quickly(smoke):
    project, _ = smoke
    started = time.perf_counter()
    again = project.repro()
    seconds = time.perf_counter() - started
    print(f"no-op dvc repro: {seconds:.1f} s")
    assert stages_run(again.stdout) == []
    assert "Data and pipelines are up to date" in again.stdout


def test_bad_params_fail_before_training(smoke):
    project, _ = smoke
    params = project.params
    for change, message in [
        ({"architectures": {**params["architectures"], "resnet99": {}}}, "unknown model 'resnet99'"),
        ({"recipe": {**params["recipe"], "train": {**params["recipe"]["train"], "optimizer": {"name": "momentum", "lr": -0.1}}}},
         r"train.optimizer.lr .*Input should be greater than 0"),
        ({"recipe": {**params["recipe"], "model": {"widht": 1}}}, r"model.widht .*unknown key"),
        ({"presets": {**params["presets"], "smoke": {**params["presets"]["smoke"], "seeds": "0"}}}, r"presets.smoke.seeds"),
    ]:
        with pytest.raises(ConfigError, match=message):
            all_cells(parse({**params, **change}).plan)
    before = len(current_runs(client_for(project)))
    project.set_params(ablations__crop__train__augment__policy="cropp")
    failed = project.repro(check=False)
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
    assert stages_run(rerun.stdout) == ["tune", "train", "report"]  # tune finds its studies complete
    archs = list(project.params["architectures"])
    cells = len(archs) * len(project.params["ablations"])
    assert f"train (smoke): {cells} cells, {len(archs)} to train" in rerun.stdout
    now = {r.info.run_name: r.info.run_id for r in current_runs(client)}
    assert now.keys() == old.keys()  # still exactly one current run per (arch, ablation, seed)
    changed = {name for name in now if now[name] != old[name]}
    assert changed == {f"{a}/crop/seed0" for a in archs}
    replaced = client.get_run(old["lenet5/crop/seed0"])
    assert replaced.data.tags["cifarbench.current"] == "false"
    assert replaced.data.tags["cifarbench.superseded_by"] == now["lenet5/crop/seed0"]


def _leaves(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in _leaves(value, f"{prefix}.{key}" if prefix else key).items()}


def test_dvc_plots_show_each_baselines_training_against_validation_and_the_confusion_matrices(smoke):
    """dvc.yaml's top-level plots: one curve of training and one of validation accuracy per architecture's
    baseline (the preset's, by `${preset}`), and the report's confusion matrices as an image."""
    project, _ = smoke
    shown = json.loads(project.run("dvc", "plots", "show", "--json").stdout)["data"]
    values = shown["train vs validation accuracy, baselines"][0]["content"]["data"]["values"]
    archs = load_params(project.path / "params.yaml")["architectures"]
    assert {v["filename::field"] for v in values} == {f"{a}/baseline.csv::{f}" for a in archs for f in ("train_acc", "val_acc")}
    assert shown["reports/figures/confusion.png"][0]["type"] == "image"


def test_dvc_exp_run_changes_exactly_the_path_it_sets_and_per_cell_results_are_versioned(smoke):
    """`dvc exp run -S` on one architecture's budget: params.yaml changes in that one line, only that
    architecture's cells train again, and the per-cell metrics (tracked by git, not ignored) diff cell by cell."""
    project, _ = smoke
    project.git("add", "-A")
    project.git("commit", "-qm", "smoke results")
    tracked = project.run("git", "ls-files", "runs").stdout.split()
    assert "runs/smoke/metrics/lenet5/baseline.json" in tracked and "runs/smoke/curves/vgg11/crop.csv" in tracked
    assert not [f for f in tracked if "/cells/" in f or "/checkpoints/" in f]  # weights stay in DVC's cache
    before = _leaves(project.params)
    path = "architectures.lenet5.presets.smoke.model.width"
    run = project.run("dvc", "exp", "run", "-n", "lenet5-narrow", "-S", f"{path}=0.25")
    after = _leaves(project.params)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {path}
    changed_lines = [line for line in project.run("git", "diff", "-U0", "params.yaml").stdout.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed_lines) == 2, changed_lines  # one line out, one line in: no anchors expanded, no reflow
    trained = set(re.findall(r"\] (\w+)/\w+/seed0: test", run.stdout))
    assert trained == {"lenet5"}
    diff = project.run("dvc", "metrics", "diff", "--json").stdout
    assert "runs/smoke/metrics/lenet5/baseline.json" in diff and "runs/smoke/metrics/vgg11/baseline.json" not in diff
    shown = project.run("dvc", "exp", "show", "--no-pager", "--csv").stdout
    assert "lenet5-narrow" in shown and "0.25" in shown


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")) as url:
        yield url


def test_pipeline_logs_to_an_mlflow_server(tmp_path, cifar_archive, server_url):
    archive, md5 = cifar_archive
    params = load_params(ROOT / "params.yaml")
    project = Project.create(tmp_path, preset="smoke", data__url=str(archive), data__md5=md5, data__val_size=100,
                             architectures={"lenet5": architecture(params, "lenet5")},
                             ablations={k: params["ablations"][k] for k in ("baseline", "flip")})
    project.repro(MLFLOW_TRACKING_URI=server_url)
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=server_url)
    runs = {r.info.run_name: r for r in current_runs(client)}
    assert set(runs) == {"lenet5/baseline/seed0", "lenet5/flip/seed0"}
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in runs.values())
    artifacts = [a.path for a in client.list_artifacts(runs["lenet5/flip/seed0"].info.run_id)]
    assert "seed0-confusion.json" in artifacts
