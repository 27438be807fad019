"""Probes: files a run wrote, damaged before they are read back (a power cut, a full disk, a hand edit): a
seed's result file, a cell's result.json and metrics file, a tuned file.

Required every time: no traceback. What can be redone is redone with a one-line warning naming the file
(the run trains again, the metrics file is written again); what cannot (a tuned file: only the tune stage
makes it) is a CifarbenchError naming the file and the fix.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import pytest

from cifarbench.config import TrackingConfig
from cifarbench.data.splits import prepare_splits
from cifarbench.errors import CifarbenchError
from cifarbench.io import atomic_path, write_json_atomic
from cifarbench.params import parse
from cifarbench.plan import read_tuned, resolve_cell
from cifarbench.runner import RunSpec, train_run
from cifarbench.tracking import Tracker
from small_params import small_params

pytestmark = pytest.mark.faults

# What a power cut, a full disk or an editor leaves: each read back as "not a result"
DAMAGED = {"empty": "", "braces": "{}", "list": "[1, 2]", "cut short": '{"summary": {"status": "compl',
           "wrong types": '{"summary": {"status": "completed", "test_acc": "high"}, "history": []}',
           "not utf-8": b"\xff\xfe{".decode("latin-1")}


@pytest.fixture(scope="module")
def prepared(cifar_archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_splits(cifar_archive[0], out, val_size=100, seed=0)
    return out


def one_run(folder: Path, prepared: Path) -> RunSpec:
    tree = copy.deepcopy(small_params(preset="smoke"))
    tree["presets"]["smoke"]["seeds"] = [0]
    cell = resolve_cell(parse(tree).plan, "lenet5", "baseline")
    tracker = Tracker.open(TrackingConfig(uri=f"sqlite:///{folder}/mlflow.db", experiment="damaged"))
    (folder / "work").mkdir(exist_ok=True)
    return RunSpec(cell, 0, prepared, folder / "work", folder / "models", tracker,
                   {"git_commit": "test", "preset": "smoke", "arch": "lenet5", "ablation": "baseline", "seed": "0"})


def test_a_damaged_seed_result_is_trained_again_with_a_warning(tmp_path, prepared, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    spec = one_run(tmp_path, prepared)
    first = train_run(spec)
    result = spec.file(".result.json")
    for what, text in DAMAGED.items():
        result.write_text(text, encoding="latin-1")
        again = train_run(spec)  # resumes from the run's last checkpoint: the same numbers
        assert again["summary"]["test_acc"] == first["summary"]["test_acc"], what
        assert json.loads(result.read_text()) == again, what  # written whole again
        err = capfd.readouterr().err
        assert f"warning: {result}" in err and "trains again" in err and "Traceback" not in err, (what, err)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("damaged").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # resumed in its own MLflow run, not a second one


def test_the_train_stage_redoes_a_damaged_cell_result_and_rewrites_a_damaged_metrics_file(tmp_path, prepared, monkeypatch,
                                                                                          capfd):
    """lenet5 with baseline (its result.json written finished, as by a run) and no_bn (not applicable to a
    network without batch norm: recorded without training, so this stage needs no worker)."""
    from cifarbench.execute import ExecutorConfig
    from cifarbench.paths import cell_dir, metrics_path, tuned_path
    from cifarbench.pipeline import cell_key, data_identity, train_stage
    from cifarbench.plan import all_cells

    monkeypatch.chdir(tmp_path)
    tree = small_params(preset="smoke")
    tree["architectures"] = {"lenet5": tree["architectures"]["lenet5"]}
    tree["ablations"] = {k: tree["ablations"][k] for k in ("baseline", "no_bn")}
    params = parse(tree)
    write_json_atomic(tuned_path("smoke", "lenet5"), {"tuned": False, "optimizer": {"lr": 0.1, "weight_decay": 0.0}})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared)
    baseline, no_bn = all_cells(params.plan)
    assert no_bn.not_applicable and not baseline.not_applicable
    write_json_atomic(cell_dir("smoke", "lenet5", "baseline") / "result.json",
                      {"key": cell_key(baseline, data_identity()), "status": "completed", "test_acc_mean": 0.5})
    write_json_atomic(metrics_path("smoke", "lenet5", "baseline"), {"status": "completed", "test_acc_mean": 0.5})

    def train() -> tuple[dict, str]:
        out = train_stage(params.plan, params.tracking, ExecutorConfig(), params.data)
        return out, capfd.readouterr().err

    assert train()[0]["trained"] == 0  # no_bn recorded, nothing to train
    na_result = cell_dir("smoke", "lenet5", "no_bn") / "result.json"
    metrics = metrics_path("smoke", "lenet5", "baseline")
    for what, text in DAMAGED.items():
        na_result.write_text(text, encoding="latin-1")
        metrics.write_text(text, encoding="latin-1")
        out, err = train()
        assert out["trained"] == 0, what
        assert f"warning: {na_result}" in err and "lenet5/no_bn trains again" in err, (what, err)
        assert f"warning: {metrics}" in err and "written again" in err and "Traceback" not in err, (what, err)
        assert json.loads(na_result.read_text())["status"] == "not_applicable", what
        assert json.loads(metrics.read_text()) == {"status": "completed", "test_acc_mean": 0.5}, what
    assert train()[1] == ""  # whole again: nothing to say


@pytest.mark.parametrize("what", DAMAGED)
def test_a_damaged_tuned_file_names_itself_and_the_fix(tmp_path, what):
    path = tmp_path / "lenet5.json"
    path.write_text(DAMAGED[what], encoding="latin-1")
    with pytest.raises(CifarbenchError) as caught:
        read_tuned(path)
    message = str(caught.value)
    assert str(path) in message and "dvc repro" in message, message


def test_a_tuned_file_that_says_tuned_without_values_is_refused(tmp_path):
    path = tmp_path / "lenet5.json"
    write_json_atomic(path, {"tuned": True, "optimizer": {"lr": "fast"}})
    with pytest.raises(CifarbenchError, match="lenet5.json"):
        read_tuned(path)
    write_json_atomic(path, {"tuned": True, "optimizer": {"lr": 0.1, "weight_decay": 5e-4}})
    assert read_tuned(path) == {"lr": 0.1, "weight_decay": 5e-4}


def test_an_atomic_write_flushes_the_file_before_the_rename(tmp_path, monkeypatch):
    """fsync of the temporary file (then of its folder) happens before the rename makes it visible."""
    import os

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync " + os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(f"replace {b}"), real_replace(a, b))[1])
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert calls == [f"fsync {tmp}", f"replace {target}", f"fsync {tmp_path}"]
