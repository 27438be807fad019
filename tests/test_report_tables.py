"""What each technique buys, on plain frames: the right cells paired by seed with the right sign, n/a and
missing shown as such, each comparison's own interval, Holm over the table, verdicts that follow the
random-effects interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cifarbench.report.tables import ACC, effects, paired_deltas

SEEDS = [0, 1, 2]
# ablation -> (technique, with, without, applies), as params.yaml's `buys` names them
QUESTIONS = {
    "baseline": ("", "baseline", "baseline", True),
    "aug_none": ("crop+flip", "baseline", "aug_none", True),
    "rotate": ("rotation", "rotate", "aug_none", True),
    "no_bn": ("batch norm", "baseline", "no_bn", False),
    "dropout": ("dropout", "dropout", "baseline", True),
}
ACCS = {  # test accuracy per seed
    "baseline": [0.60, 0.62, 0.61],
    "aug_none": [0.52, 0.55, 0.53],
    "rotate": [0.55, 0.57, 0.56],
    "dropout": [0.61, 0.62, 0.605],
}


def expected(archs=("vgg11",)) -> pd.DataFrame:
    return pd.DataFrame([{
        "arch": arch, "ablation": name, "group": "augmentation", "about": name, "seeds": SEEDS, "early_stop": False,
        "applies": applies, "technique": technique, "with_": with_, "without": without,
    } for arch in archs for name, (technique, with_, without, applies) in QUESTIONS.items()])  # fmt: skip


def runs(accs=ACCS, archs=("vgg11",)) -> pd.DataFrame:
    return pd.DataFrame([{"arch": arch, "ablation": name, "seed": s, ACC: v}
                         for arch in archs for name, values in accs.items() for s, v in zip(SEEDS, values)])


def test_each_technique_is_its_with_cell_minus_its_without_cell_paired_by_seed():
    buys = paired_deltas(runs(), expected(), buys=True).set_index("ablation")
    for ablation, (_, with_, without, applies) in QUESTIONS.items():
        if ablation == "baseline":
            assert buys.loc[ablation, "state"] == "reference"
        elif not applies:
            assert buys.loc[ablation, "state"] == "n/a"
        else:
            gain = np.subtract(ACCS[with_], ACCS[without]).mean()
            assert buys.loc[ablation, "delta"] == pytest.approx(gain)
    assert buys.loc["aug_none", "delta"] > 0  # crop+flip helps: positive, not "aug_none minus baseline"
    raw = paired_deltas(runs(), expected()).set_index("ablation")
    assert raw.loc["aug_none", "delta"] == pytest.approx(-buys.loc["aug_none", "delta"])
    assert raw.loc["rotate", "delta"] == pytest.approx(np.subtract(ACCS["rotate"], ACCS["baseline"]).mean())


def test_a_technique_whose_cell_is_not_in_the_plan_says_so():
    plan = expected()
    plan = plan[plan["ablation"] != "aug_none"]
    buys = paired_deltas(runs(), plan, buys=True).set_index("ablation")
    assert buys.loc["rotate", "state"] == "not planned" and buys.loc["dropout", "state"] == "ok"


def test_a_technique_whose_cell_has_no_run_is_missing():
    accs = {k: v for k, v in ACCS.items() if k != "aug_none"}
    buys = paired_deltas(runs(accs), expected(), buys=True).set_index("ablation")
    assert buys.loc["aug_none", "state"] == buys.loc["rotate", "state"] == "missing"
    assert buys.loc["dropout", "state"] == "ok"


def test_verdicts_follow_the_random_effects_interval_not_the_mean():
    archs = ("vgg11", "resnet18", "googlenet")  # Hartung-Knapp with 2 architectures has t(1 df) = 12.7
    accs = {**ACCS, "dropout": [0.62, 0.60, 0.615]}  # a small, noisy gain: no interval excludes 0
    table = effects(paired_deltas(runs(accs, archs), expected(archs), buys=True), expected(archs))
    assert table.loc["crop+flip", "verdict"] == "helps" and table.loc["crop+flip", "re_lo"] > 0
    assert table.loc["crop+flip", "helped"] == 3 and table.loc["crop+flip", "re_archs"] == 3
    assert table.loc["crop+flip", "re_p_bh"] < 0.05
    assert table.loc["rotation", "verdict"] == "helps"
    assert table.loc["dropout", "verdict"] == "no clear effect" and table.loc["dropout", "mean_delta"] > 0
    assert table.loc["batch norm", "verdict"] == "no runs" and np.isnan(table.loc["batch norm", "re_delta"])
    hurt = {**ACCS, "rotate": [0.40, 0.42, 0.41]}
    table = effects(paired_deltas(runs(hurt, archs), expected(archs), buys=True), expected(archs))
    assert table.loc["rotation", "verdict"] == "hurts" and table.loc["rotation", "re_hi"] < 0


def test_each_interval_comes_from_its_own_comparison_and_holm_runs_over_the_whole_table():
    """A noisy comparison of one architecture neither widens nor narrows the others' intervals (no pooled
    sd): each is the paired t interval of its own differences, df n - 1; Holm and BH adjust over every ok
    comparison of every architecture, the baseline reference row left out."""
    archs = ("vgg11", "resnet18")
    accs = {**ACCS, "dropout": [0.70, 0.50, 0.66]}  # wild seeds
    buys = paired_deltas(runs(accs, archs), expected(archs), buys=True)
    calm = paired_deltas(runs(ACCS, archs), expected(archs), buys=True)
    rotate = buys.set_index(["arch", "ablation"]).loc[("vgg11", "rotate")]
    d = np.subtract(ACCS["rotate"], ACCS["aug_none"])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert rotate["df"] == 2 and rotate["lo"] == pytest.approx(d.mean() - half)
    assert rotate["p"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert calm.set_index(["arch", "ablation"]).loc[("vgg11", "rotate"), "lo"] == pytest.approx(rotate["lo"])
    family = buys[buys["p_holm"].notna()]
    assert len(family) == 6 and set(family["state"]) == {"ok"} and "baseline" not in set(family["ablation"])
    m = len(family)
    assert family["p_holm"].min() == pytest.approx(min(1, m * family["p"].min()))
    assert (family["holm"] == (family["p_holm"] < 0.05)).all() and (family["p_bh"] <= family["p_holm"] + 1e-12).all()


def test_the_full_presets_leaderboard_shows_the_published_accuracy_beside_the_measured_one():
    from cifarbench.report.render import Table
    from cifarbench.report.sections import Inputs, leaderboard_section

    board = pd.DataFrame({"test_acc_mean": [0.9301, 0.5], "test_acc_std": [0.001, 0.01], "n": [3, 3],
                          **{c: [1.0, 1.0] for c in ("params", "flops_per_image", "train_seconds", "images_per_s",
                                                      "lr", "weight_decay")}, "optimizer": ["momentum"] * 2},
                         index=pd.Index(["resnet18", "lstm"], name="arch"))
    inputs = lambda preset: Inputs(preset, list(board.index), [], pd.DataFrame(), pd.DataFrame(),  # noqa: E731
                                   pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {}, {})
    tables = [b for b in leaderboard_section(board, inputs("full")).blocks if isinstance(b, Table)]
    published = tables[1].frame
    assert published.loc["resnet18", "published %"] == "93.02" and "kuangliu" in published.loc["resnet18", "source"]
    assert published.loc["resnet18", "measured % (mean ± sd)"] == "93.01 ± 0.10"
    assert published.loc["lstm", "published %"] == "no published number"
    assert len([b for b in leaderboard_section(board, inputs("default")).blocks if isinstance(b, Table)]) == 1


def test_runs_csv_has_one_plain_row_per_counted_run():
    from cifarbench.report.build import runs_table

    frame = runs().assign(run_id="r", status="completed", **{"tags.trained": "true", "params.train.epochs": "2",
                                                            "tags.mlflow.user": "me", "start_time": 0})
    table = runs_table(frame.sample(frac=1, random_state=0))
    assert set(table.columns) == {"arch", "ablation", "seed", "test_acc", "run_id", "status", "trained",
                                  "params.train.epochs"}  # MLflow's bookkeeping columns left out
    keys = list(zip(table["arch"], table["ablation"], table["seed"]))
    assert len(table) == len(frame) and keys == sorted(keys)
    assert "mlflow.user" not in table.columns and "start_time" not in table.columns


def test_the_tuning_table_has_a_row_per_study_own_studies_after_their_baseline():
    """One row per study key (plan.tuned_key); a current study run written before studies carried the
    ablation tag is its architecture's baseline study, and a newer baseline study run wins over it."""
    from cifarbench.report.tables import tuning

    at = lambda minute: pd.Timestamp(f"2026-01-01 00:{minute:02d}", tz="UTC")  # noqa: E731
    studies = pd.DataFrame([
        {"arch": "vgg11", "ablation": None, "start_time": at(0), "metrics.trials_complete": 3.0},  # before the tag
        {"arch": "vgg11", "ablation": "baseline", "start_time": at(5), "metrics.trials_complete": 6.0},
        {"arch": "vgg11", "ablation": "no_bn", "start_time": at(6), "metrics.trials_complete": 5.0,
         "params.best.lr": "0.004"},
        {"arch": "lenet5", "ablation": None, "start_time": at(1), "metrics.trials_complete": 4.0},
    ])
    tuned = {"lenet5": {"lr": 0.01}, "vgg11": {"lr": 0.05}, "vgg11/no_bn": {"lr": 0.004}, "resnet18": None,
             "resnet18/no_bn": None}
    table = tuning(studies, tuned, ["lenet5", "vgg11", "resnet18"])
    assert list(table.index) == ["lenet5", "vgg11", "vgg11/no_bn", "resnet18", "resnet18/no_bn"]
    assert table.loc["vgg11", "trials_complete"] == 6 and table.loc["lenet5", "trials_complete"] == 4
    assert table.loc["vgg11/no_bn", "best_lr"] == 0.004 and table.loc["vgg11/no_bn", "tuned"]
    assert table.loc["resnet18/no_bn", "study"] == "missing" and not table.loc["resnet18/no_bn", "tuned"]


def test_an_ablation_no_architecture_runs_in_the_preset_gets_no_column():
    """no_bn applies to no architecture here (as the course's ablations in the default preset): the report's
    tables leave it out instead of a column of n/a; the baseline stays."""
    from cifarbench.report.tables import measured_ablations

    assert measured_ablations(expected(("vgg11", "resnet18"))) == ["baseline", "aug_none", "rotate", "dropout"]
    table = effects(paired_deltas(runs(), expected(), buys=True), expected()[lambda e: e["ablation"] != "no_bn"])
    assert "batch norm" not in table.index and "crop+flip" in table.index


def test_a_summary_that_clears_zero_only_before_the_correction_says_so():
    from types import SimpleNamespace

    from cifarbench.report.tables import _verdict

    row = dict(archs=3, re_archs=3, did_not_train=0, re_delta=0.036, re_lo=0.024, re_hi=0.048)
    assert _verdict(SimpleNamespace(**row, re_p=0.0062, re_p_bh=0.055)) == \
        "no clear effect after correction (p 0.0062, BH 0.055)"
    assert _verdict(SimpleNamespace(**row, re_p=0.0062, re_p_bh=0.02)) == "helps"
    assert _verdict(SimpleNamespace(**{**row, "re_lo": -0.01}, re_p=0.2, re_p_bh=0.4)) == "no clear effect"


def test_the_fit_regime_is_the_mean_training_and_validation_accuracy_of_the_unregularized_cells_that_trained():
    from cifarbench.report.tables import fit_regime
    from cifarbench.tracking.read import column
    from cifarbench.tracking.tags import TRAINED

    rows = [  # arch, ablation, seed, last-epoch training accuracy, best validation accuracy, trained
        ("vgg11", "baseline", 0, 0.50, 0.40, "true"), ("vgg11", "baseline", 1, 0.60, 0.44, "true"),
        ("vgg11", "aug_none", 0, 1.00, 0.30, "true"), ("vgg11", "aug_none", 1, 0.98, 0.34, "true"),
        ("vgg11", "aug_none", 2, 0.10, 0.10, "false"),  # did not train: left out of the means
        ("vgg11", "dropout", 0, 0.20, 0.20, "true"),  # not a fit cell
        ("googlenet", "baseline", 0, 0.30, 0.28, "true"), ("googlenet", "aug_none", 0, 0.61, 0.36, "true"),
    ]
    frame = pd.DataFrame([{"arch": a, "ablation": b, "seed": s, "metrics.train_acc": t, "metrics.best_val_acc": v,
                           column(TRAINED): ok} for a, b, s, t, v, ok in rows])
    fit = fit_regime(frame, ["googlenet", "vgg11", "lstm"])
    assert list(fit.columns) == ["baseline train", "baseline val", "aug_none train", "aug_none val"]  # no no_reg run
    assert fit.loc["vgg11"].tolist() == pytest.approx([0.55, 0.42, 0.99, 0.32])
    assert fit.loc["googlenet", "aug_none train"] == pytest.approx(0.61)
    assert fit.loc["lstm"].isna().all()  # in the plan, no run: a row that says so
    assert fit_regime(frame.drop(columns=["metrics.train_acc", "metrics.best_val_acc"]), ["vgg11"]).columns.empty
