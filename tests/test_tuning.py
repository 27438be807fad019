"""The tune stage on tiny generated data: a real Optuna journal file and a real MLflow SQLite store in
a temp folder; trials on the local executor's worker processes; a study that completes and prunes
trials, survives SIGKILL, and is shared by two coordinators."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from cifarbench.data.splits import prepare_splits, split_files
from cifarbench.errors import ConfigError
from cifarbench.execute import ExecutorConfig
from cifarbench.paths import tuned_path
from cifarbench.params import parse
from cifarbench.plan import read_tuned, read_tuned_values, resolve_cell
from cifarbench.config import TrackingConfig
from cifarbench.tracking import Tracker
from cifarbench.tuning import ENV_STORAGE, Study, TuneConfig, make_search, tune_stage
from small_params import small_params

LOCAL = ExecutorConfig()  # one 1-thread worker process per core

STORAGE = "optuna/studies.journal"  # params.yaml's default, relative to the working folder


def params(trials: int = 6, epochs: int = 3, **tune) -> dict:
    """The smoke preset, lenet5 with Adam (it learns the generated data in a few epochs, so trials differ
    instead of tying at chance), a wide lr range so that some trials do badly and get pruned."""
    tree = small_params(preset="smoke")
    tree["architectures"] = {"lenet5": {**tree["architectures"]["lenet5"], "train": {"optimizer": {"name": "adam", "lr": 3e-3}}}}
    smoke = tree["presets"]["smoke"]
    smoke |= {"tune_trials": trials, "tune_epochs": epochs, "train": {**smoke["train"], "epochs": epochs}}
    tree["tracking"] = {"experiment": "cifarbench", "uri": "sqlite:///mlflow.db"}
    tree["tune"] = {**tree["tune"], "lr": {"adam": [1.0e-5, 0.5]}, "startup_trials": 3, **tune}
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


def tune(tree: dict, executor: ExecutorConfig = LOCAL) -> dict:
    params = parse(tree)
    return tune_stage(params.plan, params.tune, params.tracking, executor, ["lenet5"])["lenet5"]


def test_tiny_study_completes_prunes_logs_and_feeds_the_train_stage(workdir, capsys):
    tree = params()
    tuned = tune(tree)

    # One plain line per finished trial, led by the stage's progress (cifarbench.progress), as the train stage's runs.
    lines = [line for line in capsys.readouterr().out.splitlines() if " tune lenet5 trial " in line]
    progress = [re.match(r"\[(\d+)/6 trials, \d+:\d\d elapsed, ~\d+:\d\d left\] tune lenet5 trial \d+: ", line)
                for line in lines]
    assert all(progress) and [int(m.group(1)) for m in progress] == [1, 2, 3, 4, 5, 6], lines
    assert lines[-1].startswith("[6/6 trials, ") and ", ~0:00 left]" in lines[-1]
    assert not any("\x1b" in line or "\r" in line for line in lines)  # no terminal control codes

    assert json.loads(tuned_path("smoke", "lenet5").read_text()) == tuned
    counts = tuned["trials"]
    assert counts["complete"] >= 1 and counts["pruned"] >= 1 and counts["failed"] == 0
    assert counts["complete"] + counts["pruned"] == 6
    assert tuned["tuned"] and tuned["storage"] == str(workdir / STORAGE) and tuned["study"].startswith("smoke/lenet5/")
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
    assert tune(tree) == tuned
    assert [r.info.run_id for r in tune_runs(workdir, "tune")] == [parent.info.run_id]

    # The train stage reads the file: the baseline takes both values, no_l2 keeps its zero weight decay.
    # (By the study's key, as the train stage reads them; the recipe's own lr must not pass for the tuned one:
    # trial 0 is the recipe and may win.)
    plan = parse(tree).plan
    values = read_tuned_values(plan)
    assert values == {"lenet5": read_tuned(tuned_path("smoke", "lenet5"))} == {"lenet5": tuned["optimizer"]}
    baseline = resolve_cell(plan, "lenet5", "baseline", values).train.optimizer
    assert (baseline.lr, baseline.weight_decay) == (tuned["optimizer"]["lr"], tuned["optimizer"]["weight_decay"])
    assert resolve_cell(plan, "lenet5", "baseline").train.optimizer.lr == 3e-3  # no values: the recipe's
    no_l2 = resolve_cell(plan, "lenet5", "no_l2", values).train.optimizer
    assert (no_l2.lr, no_l2.weight_decay) == (tuned["optimizer"]["lr"], 0.0)


def test_a_preset_without_trials_writes_untuned_values(workdir):
    tuned = tune(params(trials=0))
    assert tuned["tuned"] is False and tuned["trials"] == {"complete": 0, "pruned": 0, "failed": 0}
    assert read_tuned(tuned_path("smoke", "lenet5")) is None
    assert not (workdir / "mlflow.db").exists()


def test_the_tune_stage_never_reads_the_test_split(workdir):
    """Trials train and validate through runner.train_one on the training and validation subsets only:
    with the test split's files gone, a study still completes."""
    for path in split_files(workdir / "data" / "prepared", "test"):
        path.unlink()
    tuned = tune(params(trials=2, epochs=1), ExecutorConfig(cpus_per_run=2))
    counts = tuned["trials"]
    assert counts["complete"] >= 1 and counts["complete"] + counts["pruned"] == 2 and counts["failed"] == 0


def test_the_environment_overrides_the_storage_and_bad_ranges_name_the_key(workdir, monkeypatch):
    monkeypatch.setenv(ENV_STORAGE, f"sqlite:///{workdir / 'optuna.db'}")
    tuned = tune(params(trials=2, epochs=1))
    assert tuned["storage"].startswith("sqlite:///") and (workdir / "optuna.db").is_file()
    with pytest.raises(ConfigError, match="tune.weight_decay"):
        tune(params(weight_decay=[1.0e-2, 1.0e-6]))
    with pytest.raises(ConfigError, match="sgd"):
        tune(params(lr={"sgd": [0.01, 0.1]}))


def run_child(workdir: Path, tree: dict) -> subprocess.Popen:
    """`cifarbench tune --arch lenet5` in its own process, on `tree` as params.yaml."""
    (workdir / "params.yaml").write_text(yaml.safe_dump(tree))
    return subprocess.Popen([sys.executable, "-m", "cifarbench.cli", "tune", "--arch", "lenet5"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_study_resumes_without_lost_or_stuck_trials(workdir):
    tree = params(trials=4, epochs=8, pruner={"name": "none"})  # 8 epochs: a wide window for the kill
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
        return (any(t.state == TrialState.COMPLETE for t in states)
                and any(t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) < 5 for t in states))

    wait_for(mid_trial_after_a_complete_one)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert any(t.state == TrialState.RUNNING for t in trials())  # left behind by the dead process

    assert not alive_children(child.pid)  # its worker processes died with it

    tuned = tune(tree)
    trials = study_trials(workdir, tuned["study"])
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert 1 <= len(killed) <= 2  # the trials in flight: one per worker process
    for trial in killed:
        [retry] = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
        assert retry.params == trial.params and retry.state == TrialState.COMPLETE
    assert tuned["trials"] == {"complete": 4, "pruned": 0, "failed": len(killed)} and len(trials) == 4 + len(killed)
    assert all(t.state != TrialState.RUNNING for t in trials)
    [parent] = tune_runs(workdir, "tune")  # the resumed study kept its parent run
    runs = {r.info.run_name: r for r in tune_runs(workdir, "tune-trial")}
    assert len(runs) == len(trials)
    for trial in killed:
        assert runs[f"tune/lenet5/trial{trial.number}"].data.tags["state"] == "failed"
        assert runs[f"tune/lenet5/trial{trial.number}"].info.status == "FAILED"


def test_two_coordinators_share_one_study(workdir):
    """Two `cifarbench tune` processes at once on one journal, each with its worker processes: the budget
    is filled exactly, no trial is drawn twice, all trials hang under one MLflow parent run."""
    tree = params(trials=6, epochs=3, pruner={"name": "none"})
    first, second = run_child(workdir, tree), run_child(workdir, tree)
    for child in (first, second):
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0, out
    trials = study_trials(workdir, json.loads(tuned_path("smoke", "lenet5").read_text())["study"])
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.params["lr"], t.params["weight_decay"]) for t in trials}) == 6  # no trial drawn twice
    print(f"trials per coordinator: {Counter(t.user_attrs['owner'] for t in trials)}")
    runs = tune_runs(workdir, "tune-trial")
    assert sorted(r.info.run_name for r in runs) == sorted(f"tune/lenet5/trial{k}" for k in range(6))
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1


def test_parallel_trials_fill_the_same_budget_as_one_at_a_time(workdir):
    """Two trials at a time (two 1-thread workers) and one at a time (one 2-thread worker): the same
    number of complete + pruned trials, each architecture's own study."""
    one = tune(params(trials=5, epochs=3), ExecutorConfig(cpus_per_run=2))
    tree = params(trials=5, epochs=3, storage="optuna/two.journal")
    tree["tracking"]["uri"] = "sqlite:///two.db"
    two = tune(tree)
    count = lambda t: t["trials"]["complete"] + t["trials"]["pruned"]  # noqa: E731
    assert count(one) == count(two) == 5 and one["trials"]["failed"] == two["trials"]["failed"] == 0


def alive_children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def test_a_trial_never_trains_longer_than_the_cell_it_tunes():
    tree = params(trials=2, epochs=3)
    cfg = TuneConfig.model_validate(tree["tune"])
    epochs = lambda tree: make_search(parse(tree).plan, cfg, "lenet5", STORAGE).cell.train.epochs  # noqa: E731
    assert epochs(tree) == 3
    tree["presets"]["smoke"]["tune_epochs"] = 8
    assert epochs(tree) == 3
    tree["presets"]["smoke"]["tune_epochs"] = 2
    assert epochs(tree) == 2


def test_each_architecture_draws_its_own_trials_after_the_recipe(workdir):
    """Trial 0 of every study is the recipe's own lr/wd (the reference tuning must beat); the sampler is
    seeded per architecture, so two architectures do not search the same points."""
    tree = params(trials=3)
    tree["architectures"]["vgg11"] = small_params()["architectures"]["vgg11"]
    tree["tune"]["lr"]["momentum"] = [1.0e-3, 0.5]
    plan, cfg = parse(tree).plan, TuneConfig.model_validate(tree["tune"])
    tracker = Tracker.open(TrackingConfig(uri="sqlite:///mlflow.db"))
    asked = {}
    for arch in ("lenet5", "vgg11"):
        study = Study(make_search(plan, cfg, arch, str(workdir / STORAGE)), cfg, str(workdir / STORAGE), tracker)
        asked[arch] = [study.ask(workdir / "data" / "prepared") for _ in range(2)]
    lenet5, vgg11 = asked["lenet5"], asked["vgg11"]
    assert lenet5[0].recipe and lenet5[0].params == {"lr": 3e-3, "weight_decay": 5e-4}
    assert vgg11[0].recipe and vgg11[0].params["lr"] == tree["architectures"]["vgg11"]["train"]["optimizer"]["lr"]
    assert not lenet5[1].recipe and lenet5[1].params != vgg11[1].params


# --- tune: own (issue #20): no_bn searched on its own cell --------------------------------------------------

def own_params(trials: int = 2, epochs: int = 1) -> dict:
    """lenet5 (no batch norm: no_bn is n/a, no own study) and vgg11 (batch norm in params_small), no_bn tuned
    on its own."""
    tree = params(trials=trials, epochs=epochs)
    tree["architectures"]["vgg11"] = small_params()["architectures"]["vgg11"]
    tree["tune"]["lr"]["momentum"] = [1.0e-3, 0.5]
    tree["ablations"]["no_bn"]["tune"] = "own"
    return tree


def test_an_own_study_searches_the_ablations_cell_under_a_name_that_says_so(workdir):
    tree = own_params()
    plan, cfg = parse(tree).plan, TuneConfig.model_validate(tree["tune"])
    url = str(workdir / STORAGE)
    base, own = make_search(plan, cfg, "vgg11", url), make_search(plan, cfg, "vgg11", url, "no_bn")
    assert re.fullmatch(r"smoke/vgg11/[0-9a-f]{12}", base.study) and base.key == "vgg11" and not base.own
    assert re.fullmatch(r"smoke/vgg11/no_bn/[0-9a-f]{12}", own.study) and own.key == "vgg11/no_bn" and own.own
    assert own.cell.model.norm == "none" and base.cell.model.norm != "none"
    assert (own.lr, own.weight_decay, own.trials) == (base.lr, base.weight_decay, base.trials)  # the same search
    with pytest.raises(ConfigError, match="lenet5 has no batch norm switch|lenet5 has no normalization|same config as baseline"):
        make_search(plan, cfg, "lenet5", url, "no_bn")  # not applicable: no study
    with pytest.raises(ConfigError, match="set `ablations.dropout.tune: own`"):
        make_search(plan, cfg, "vgg11", url, "dropout")

    tracker = Tracker.open(TrackingConfig(uri="sqlite:///mlflow.db"))
    first = Study(own, cfg, url, tracker).ask(workdir / "data" / "prepared")
    assert first.recipe and first.params == {"lr": 0.05, "weight_decay": 5.0e-4}  # no_bn's own recipe values
    [parent] = tune_runs(workdir, "tune")
    assert parent.info.run_name == "tune/vgg11/no_bn" and parent.data.tags["study"] == own.study
    assert {k: parent.data.tags[k] for k in ("arch", "ablation", "preset")} == {
        "arch": "vgg11", "ablation": "no_bn", "preset": "smoke"}
    [trial] = tune_runs(workdir, "tune-trial")
    assert trial.info.run_name == "tune/vgg11/no_bn/trial0" and trial.data.tags["ablation"] == "no_bn"


def test_the_tune_stage_runs_no_bns_own_study_and_its_cells_take_its_values(workdir):
    tree = own_params()
    params = parse(tree)
    out = tune_stage(params.plan, params.tune, params.tracking, LOCAL)

    assert set(out) == {"lenet5", "vgg11", "vgg11/no_bn"}  # lenet5 has no batch norm: no study for its no_bn
    assert json.loads(tuned_path("smoke", "vgg11", "no_bn").read_text()) == out["vgg11/no_bn"]
    assert json.loads(tuned_path("smoke", "vgg11").read_text()) == out["vgg11"]
    assert not tuned_path("smoke", "lenet5", "no_bn").exists()
    own = out["vgg11/no_bn"]
    assert own["study"].startswith("smoke/vgg11/no_bn/") and "no_bn" not in out["vgg11"]["study"]
    assert own["trials"]["complete"] + own["trials"]["pruned"] == 2 and own["trials"]["failed"] == 0
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / STORAGE)))
    assert {s.study_name for s in optuna.get_all_study_summaries(journal)} == {r["study"] for r in out.values()}
    assert study_trials(workdir, own["study"])[0].params == {"lr": 0.05, "weight_decay": 5.0e-4}  # the recipe

    parents = {r.info.run_name: r for r in tune_runs(workdir, "tune")}
    assert set(parents) == {"tune/lenet5", "tune/vgg11", "tune/vgg11/no_bn"}
    assert parents["tune/vgg11/no_bn"].data.tags["cifarbench.current"] == "true"
    assert parents["tune/vgg11"].data.tags["cifarbench.current"] == "true"  # each study its own current run
    assert {r.info.run_name for r in tune_runs(workdir, "tune-trial") if r.data.tags["ablation"] == "no_bn"} == {
        "tune/vgg11/no_bn/trial0", "tune/vgg11/no_bn/trial1"}

    tuned = read_tuned_values(params.plan)
    assert tuned == {key: summary["optimizer"] if summary["tuned"] else None for key, summary in out.items()}
    no_bn, dropout = (resolve_cell(params.plan, "vgg11", a, tuned).train.optimizer for a in ("no_bn", "dropout"))
    assert (no_bn.lr, no_bn.weight_decay) == tuple(own["optimizer"].values())
    assert (dropout.lr, dropout.weight_decay) == tuple(out["vgg11"]["optimizer"].values())


def test_a_preset_without_trials_writes_untuned_files_for_own_studies_too(workdir):
    params = parse(own_params(trials=0))
    out = tune_stage(params.plan, params.tune, params.tracking, LOCAL)
    assert set(out) == {"lenet5", "vgg11", "vgg11/no_bn"} and not any(s["tuned"] for s in out.values())
    assert read_tuned_values(params.plan) == {"lenet5": None, "vgg11": None, "vgg11/no_bn": None}
    assert resolve_cell(params.plan, "vgg11", "no_bn", read_tuned_values(params.plan)).train.optimizer.lr == 0.05
    assert not (workdir / "mlflow.db").exists()


# --- tune: own for the optimizer ablations (issue #24): each optimizer at its own tuned lr ------------------

def optimizer_params() -> dict:
    """params_small's default preset (lenet5: SGD+momentum), with adam and adamw tuned on their own."""
    adamw = {"group": "optimization", "about": "AdamW", "tune": "own",
             "buys": {"technique": "AdamW instead of Adam", "with": "adamw", "without": "adam"},
             "train": {"optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.05}}}
    return small_params(ablations__adam__tune="own", ablations__adamw=adamw, presets__default__tune_trials=3,
                        tune__lr={"momentum": [0.005, 0.5], "adam": [1.0e-4, 1.0e-2], "adamw": [2.0e-4, 2.0e-2]})


def test_an_optimizers_own_study_searches_that_optimizers_lr_range(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = optimizer_params()
    plan, cfg = parse(tree).plan, TuneConfig.model_validate(tree["tune"])
    base, adam, adamw = (make_search(plan, cfg, "lenet5", STORAGE, a) for a in ("baseline", "adam", "adamw"))
    assert (base.lr, adam.lr, adamw.lr) == ((0.005, 0.5), (1.0e-4, 1.0e-2), (2.0e-4, 2.0e-2))
    assert adam.key == "lenet5/adam" and re.fullmatch(r"default/lenet5/adam/[0-9a-f]{12}", adam.study)
    assert adam.weight_decay == base.weight_decay == (1.0e-6, 1.0e-2)  # coupled L2: searched as the baseline's
    assert adamw.weight_decay is None  # adamw sets its decoupled decay: only the lr is searched


def test_an_optimizers_own_study_starts_from_its_set_lr_and_keeps_a_decay_it_sets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = optimizer_params()
    plan, cfg = parse(tree).plan, TuneConfig.model_validate(tree["tune"])
    url, tracker = str(tmp_path / STORAGE), Tracker.open(TrackingConfig(uri="sqlite:///mlflow.db"))
    adam = Study(make_search(plan, cfg, "lenet5", url, "adam"), cfg, url, tracker).ask(tmp_path)
    assert adam.recipe and adam.params == {"lr": 1.0e-3, "weight_decay": 5.0e-4}  # trial 0: Adam's 1e-3
    study = Study(make_search(plan, cfg, "lenet5", url, "adamw"), cfg, url, tracker)
    first, searched = study.ask(tmp_path), study.ask(tmp_path)
    assert first.params == {"lr": 1.0e-3, "weight_decay": 0.05}
    assert searched.params["weight_decay"] == 0.05 and 2.0e-4 <= searched.params["lr"] <= 2.0e-2  # decay kept, not 0
