"""`cifarbench calibrate`: budget candidates compared on validation accuracy, with the test split's files gone
(a budget choice never sees test), results written as JSON for committing beside the choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cifarbench.calibrate import calibrate, candidate_plan, parse_candidate, print_summary
from cifarbench.data.splits import prepare_splits, split_files
from cifarbench.errors import ConfigError
from cifarbench.execute import ExecutorConfig
from cifarbench.params import parse
from cifarbench.plan import resolve_cell
from small_params import small_params


def test_a_candidate_changes_the_architectures_budget_under_every_ablation():
    plan = parse(small_params(preset="smoke")).plan
    changes = parse_candidate("train.epochs=3,model.width=0.25,train.optimizer.lr=0.02")
    assert changes == {"train": {"epochs": 3, "optimizer": {"lr": 0.02}}, "model": {"width": 0.25}}
    cand = candidate_plan(plan, "lenet5", changes)
    for ablation in ("baseline", "aug_none", "no_l2"):
        cell = resolve_cell(cand, "lenet5", ablation)
        assert (cell.train.epochs, cell.model.width, cell.train.optimizer.lr) == (3, 0.25, 0.02)
    assert resolve_cell(cand, "lenet5", "aug_none").train.augment.policy == "none"  # the ablation still wins
    assert resolve_cell(cand, "lenet5", "no_l2").train.optimizer.weight_decay == 0.0
    assert resolve_cell(plan, "vgg11", "baseline") == resolve_cell(cand, "vgg11", "baseline")  # others untouched
    with pytest.raises(ConfigError, match="model.KEY=VALUE or train.KEY=VALUE"):
        parse_candidate("epochs=3")


@pytest.mark.slow
def test_calibration_trains_on_train_compares_on_validation_and_never_opens_test(cifar_archive, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    prepare_splits(cifar_archive[0], prepared, val_size=100, seed=0)
    for path in split_files(prepared, "test"):
        path.unlink()  # a calibration that opened the test split would fail here
    plan = parse(small_params(preset="smoke")).plan
    out = calibrate(plan, ExecutorConfig(), "lenet5", ["train.epochs=1", "train.epochs=2"], ["aug_none"], [0, 1],
                    prepared=prepared)
    assert [c["changes"] for c in out["candidates"]] == ["train.epochs=1", "train.epochs=2"]
    for cand, epochs in zip(out["candidates"], (1, 2)):
        assert {(r["ablation"], r["seed"]) for r in cand["runs"]} == {(a, s) for a in ("baseline", "aug_none") for s in (0, 1)}
        assert all(r["epochs"] == epochs and 0 <= r["final_val_acc"] <= 1 for r in cand["runs"])
        buys = cand["buys"]["baseline augmentation"]  # params_small: aug_none buys it (baseline - aug_none)
        runs = {(r["ablation"], r["seed"]): r["final_val_acc"] for r in cand["runs"]}
        expected = sum(runs[("baseline", s)] - runs[("aug_none", s)] for s in (0, 1)) / 2
        assert buys["n"] == 2 and buys["mean"] == pytest.approx(expected)
    print_summary(out)
    assert "buys on validation" in capsys.readouterr().out
    json.dumps(out)  # the evidence is plain JSON
