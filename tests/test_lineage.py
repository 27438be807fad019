"""Lineage in MLflow (cifarbench.tracking.lineage): a training run names the images it used as dataset inputs
(training, validation, test) and logs the weights it made, which load_trained rebuilds into a model that
scores the run's own test accuracy again. One tiny run, in a real MLflow SQLite store (~15 s)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import pytest

from cifarbench.config import TrackingConfig
from cifarbench.data.splits import prepare_splits
from cifarbench.engine import evaluate
from cifarbench.errors import CifarbenchError
from cifarbench.params import parse
from cifarbench.plan import Budget, resolve_cell
from cifarbench import runner
from cifarbench.runner import RunSpec, archive_of, data_subsets, load_trained, train_run
from cifarbench.tracking import Archive, DataSubset, Tracker
from cifarbench.tracking.lineage import CONTEXT, dataset, log_datasets
from small_params import small_params

URL = "https://example.org/mirror/cifar-10-python.tar.gz"


@pytest.fixture(scope="module")
def trained(cifar_archive, tmp_path_factory) -> tuple[RunSpec, dict, str]:
    """One finished run of lenet5/baseline, seed 3, on a 60-image draw; (its spec, its result, the store URI)."""
    folder = tmp_path_factory.mktemp("lineage")
    prepared = folder / "prepared"
    prepare_splits(cifar_archive[0], prepared, val_size=100, seed=0)
    tree = copy.deepcopy(small_params())
    tree["preset"] = "smoke"
    tree["presets"]["smoke"].update(seeds=[3], train_subset=60, test_skip=20, test_subset=50)
    cell = resolve_cell(parse(tree).plan, "lenet5", "baseline")
    uri = f"sqlite:///{folder}/mlflow.db"
    tracker = Tracker.open(TrackingConfig(uri=uri, experiment="lineage"))
    (folder / "work").mkdir()
    tags = {"preset": "smoke", "arch": "lenet5", "ablation": "baseline", "seed": "3"}
    spec = RunSpec(cell, 3, prepared, folder / "work", folder / "models", tracker, tags, data_url=URL)
    return spec, train_run(spec), uri


def test_a_run_names_the_images_it_trained_validated_and_was_tested_on(trained):
    spec, result, uri = trained
    run = mlflow.MlflowClient(uri).get_run(result["summary"]["run_id"])
    inputs = {next(t.value for t in i.tags if t.key == CONTEXT): i.dataset for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "training", "validation"]
    md5 = json.loads((spec.prepared / "info.json").read_text())["archive_md5"]
    for context, split, images, selection in [("training", "train", 60, {"stratified_draw": 60, "seed": 3}),
                                              ("validation", "val", 100, {"first": 100}),
                                              ("test", "test", 50, {"skip": 20, "first": 50})]:
        logged = inputs[context]
        profile = json.loads(logged.profile)
        assert (logged.name, logged.source_type, json.loads(logged.source)) == (f"cifar10-{split}", "http", {"url": URL})
        assert (profile["split"], profile["images"], profile["selection"]) == (split, images, selection)
        assert profile["archive_md5"] == md5 and profile["validation_split"] == {"size": 100, "seed": 0}
        assert logged.digest.startswith(md5[:8]) and len(logged.digest) <= 36


def test_dataset_digest_is_stable_and_changes_with_the_images():
    archive = Archive(URL, "c58f30108f718f92721af3b95e74349a", 5000, 0)
    draw = DataSubset("training", "train", 500, {"stratified_draw": 500, "seed": 0})
    same = dataset(archive, DataSubset("training", "train", 500, {"seed": 0, "stratified_draw": 500}))
    assert dataset(archive, draw).digest == same.digest == "c58f3010-" + same.digest[9:]
    others = [dataset(archive, DataSubset("training", "train", 500, {"stratified_draw": 500, "seed": 1})),
              dataset(Archive(URL, archive.md5, 5000, 1), draw),
              dataset(Archive(URL, "0" * 32, 5000, 0), draw)]
    assert len({d.digest for d in others} | {same.digest}) == 4
    assert dataset(Archive(URL.replace("https://example.org", "file:///srv"), archive.md5, 5000, 0), draw).digest \
        == same.digest  # a mirror of the same archive: the same images
    assert dataset(Archive("/srv/cifar.tar.gz", archive.md5, 5000, 0), draw).source_type == "local"


def test_datasets_logged_again_on_resume_are_not_doubled(trained):
    tracker = trained[0].tracker
    client = tracker.client()
    run_id = client.create_run(tracker.experiment_id).info.run_id
    archive = Archive(URL, "c58f30108f718f92721af3b95e74349a", 5000, 0)
    subsets = data_subsets(Budget(seeds=[0], train_subset=500), 0, (500, 5000, 10000))
    for _ in range(2):
        log_datasets(client, run_id, archive, subsets)
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 3


def test_archive_of_reads_the_prepared_split_and_names_the_folder_without_a_url(trained):
    spec, _, _ = trained
    assert archive_of(spec.prepared, None).url == str(spec.prepared)
    assert archive_of(spec.prepared, URL).val_size == 100


def test_weights_reload_from_the_run_id_and_the_file_and_score_the_runs_test_accuracy(trained, tmp_path):
    spec, result, uri = trained
    run_id = result["summary"]["run_id"]
    artifacts = {f.path for f in mlflow.MlflowClient(uri).list_artifacts(run_id, "model")}
    assert artifacts == {"model/seed3.pt", "model/seed3.json"}
    test = runner.test_data(spec.prepared, spec.cell.budget)
    for source in (run_id, spec.models_dir / "seed3.pt", spec.models_dir):
        model = load_trained(source, tracking=uri)
        assert not model.training
        tested = evaluate(model, test, batch_size=spec.cell.train.eval_batch_size, fast=spec.cell.train.fast,
                          cpu_paths=spec.cpu_paths)
        assert (tested.accuracy, tested.loss) == (result["summary"]["test_acc"], result["summary"]["test_loss"])


def test_load_trained_names_what_is_missing(trained, tmp_path):
    _, _, uri = trained
    with pytest.raises(CifarbenchError, match="no MLflow run 'not-a-run'"):
        load_trained("not-a-run", tracking=uri)
    (tmp_path / "seed0.pt").write_bytes(b"")
    with pytest.raises(CifarbenchError, match="no seed0.json beside it"):
        load_trained(tmp_path / "seed0.pt")


def _log_at_once(args) -> str:
    """One of several processes: a run of its own, then its datasets logged the moment the barrier opens."""
    uri, barrier = args
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("race").experiment_id
    run = client.create_run(experiment).info.run_id
    archive = Archive(url="/data/cifar-10-python.tar.gz", md5="0" * 32, val_size=5000, split_seed=0)
    subsets = [DataSubset("validation", "val", 500, {"first": 500}), DataSubset("test", "test", 8000, {"skip": 2000})]
    barrier.wait()
    log_datasets(client, run, archive, subsets)
    return run


def test_runs_starting_at_once_all_log_the_datasets_they_share(tmp_path):
    """Every seed's first runs log the same validation and test datasets at once: MLflow's look-up-then-insert
    can lose the race on the store's unique key (seen: a real default run's first run failed on it)."""
    import multiprocessing

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("race")  # the store made once, before the fan-out
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4)
        runs = pool.map(_log_at_once, [(uri, barrier)] * 4)
    client = MlflowClient(tracking_uri=uri)
    for run in runs:
        inputs = client.get_run(run).inputs.dataset_inputs
        assert sorted(i.dataset.name for i in inputs) == ["cifar10-test", "cifar10-val"]
