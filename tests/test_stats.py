"""The report's statistics: per-comparison intervals that cover at their nominal rate, Holm and
Benjamini-Hochberg equal to reference implementations (statsmodels, scipy), the DerSimonian-Laird summary
equal to statsmodels' and to a hand-worked case, and runs that did not train (tag trained=false in a real
MLflow store) kept out of every difference and summary."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import false_discovery_control
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from cifarbench.report import stats, tables
from cifarbench.report.render import Document, Table, to_markdown
from cifarbench.report.sections import Inputs, leaderboard_section, matrix_section
from cifarbench.tracking.read import load_runs
from cifarbench.tracking.tags import CURRENT, DID_NOT_TRAIN, TRAINED, run_identity


def test_per_comparison_interval_covers_95_percent_when_comparisons_have_different_noise():
    """2,000 comparisons of 5 seeds, each with its own noise level (0.2 to 5 points) and true effect: the
    interval from the comparison's own differences holds the true effect ~95% of the time, at every
    noise level (the pooled sd it replaces covered ~75% for the noisy comparisons)."""
    rng = np.random.default_rng(20261202)
    sd = rng.choice([0.002, 0.01, 0.05], size=2000)
    truth = rng.normal(0, 0.02, size=2000)
    hits = []
    for mu, s in zip(truth, sd):
        t = stats.paired_t(rng.normal(mu, s, size=5))
        assert t.df == 4
        hits.append(t.lo <= mu <= t.hi)
    hits = np.array(hits)
    assert 0.93 <= hits.mean() <= 0.97
    for level in (0.002, 0.05):  # quiet and noisy comparisons alike
        assert 0.92 <= hits[sd == level].mean() <= 0.98


def test_paired_t_p_value_is_the_paired_t_tests_and_agrees_with_the_interval():
    rng = np.random.default_rng(1)
    null = np.array([stats.paired_t(rng.normal(0, 0.01, size=5)).p for _ in range(2000)])
    assert 0.04 <= (null < 0.05).mean() <= 0.06  # uniform under no effect
    d = np.array([0.02, 0.031, 0.012, 0.025])
    t = stats.paired_t(d)
    from scipy.stats import ttest_1samp

    assert t.p == pytest.approx(ttest_1samp(d, 0).pvalue) and t.lo > 0 and t.p < 0.05


def test_paired_t_edge_cases():
    one = stats.paired_t(np.array([0.03]))
    assert one.n == 1 and one.mean == 0.03 and math.isnan(one.lo) and math.isnan(one.p)
    assert math.isnan(stats.paired_t(np.array([])).mean)
    # equal differences (to float rounding of k/N): no interval, the exact sign-flip p = 2 / 2**n
    same = stats.paired_t(np.array([0.55 - 0.60, 0.57 - 0.62, 0.56 - 0.61]))
    assert same.sd == 0 and math.isnan(same.lo) and same.p == pytest.approx(0.25)
    assert stats.paired_t(np.array([0.01] * 6)).p == pytest.approx(1 / 32)
    assert stats.paired_t(np.zeros(4)).p == 1.0  # the same runs: nothing differs


def test_holm_and_bh_equal_statsmodels_and_scipy():
    rng = np.random.default_rng(7)
    p = np.concatenate([rng.uniform(size=60), rng.uniform(0, 0.01, size=17), [0.02, 0.02, 1.0]])  # with ties
    assert np.allclose(stats.holm(p), multipletests(p, method="holm")[1])
    assert np.allclose(stats.bh(p), multipletests(p, method="fdr_bh")[1])
    assert np.allclose(stats.bh(p), false_discovery_control(p, method="bh"))
    with_gaps = np.insert(p, [3, 10], np.nan)  # comparisons without a p-value are not in the family
    assert np.isnan(stats.holm(with_gaps)[[3, 11]]).all()
    assert np.allclose(stats.holm(with_gaps)[np.isfinite(with_gaps)], multipletests(p, method="holm")[1])
    assert np.allclose(stats.bh(with_gaps)[np.isfinite(with_gaps)], false_discovery_control(p))


def test_dersimonian_laird_equals_statsmodels():
    y = np.array([0.012, 0.031, -0.004, 0.02, 0.26])
    v = np.array([0.0001, 0.0004, 0.00025, 0.00005, 0.0009])
    mine = stats.dersimonian_laird(y, v)
    ref = combine_effects(y, v, method_re="dl")
    lo, hi = ref.conf_int(use_t=False)[1]  # [1]: the random effect, normal interval
    assert mine.estimate == pytest.approx(ref.mean_effect_re) and mine.se == pytest.approx(ref.sd_eff_w_re)
    assert (mine.lo, mine.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert mine.tau2 == pytest.approx(ref.tau2) and mine.i2 == pytest.approx(ref.i2) and mine.q == pytest.approx(ref.q)


def test_dersimonian_laird_by_hand_with_equal_variances():
    """Equal variances v: tau2 = (sample variance of y) - v, the estimate is the plain mean, se = sd(y)/sqrt(k).
    y = 0, 2, 4 and v = 1: sample variance 4, tau2 3, se sqrt(4/3), Q = 8, I2 = (8 - 2) / 8."""
    r = stats.dersimonian_laird(np.array([0.0, 2.0, 4.0]), np.ones(3))
    assert (r.estimate, r.tau2, r.q) == (pytest.approx(2), pytest.approx(3), pytest.approx(8))
    assert r.i2 == pytest.approx(0.75)
    assert r.hi - r.estimate == pytest.approx(1.959964 * math.sqrt(4 / 3), rel=1e-6)
    # Hartung-Knapp: se^2 = sum w*(y - mu)^2 / ((k - 1) sum w*) = (4 + 0 + 4)/4 / (2 * 3/4) = 4/3, t with 2 df
    assert r.hk_hi - r.estimate == pytest.approx(4.302653 * math.sqrt(4 / 3), rel=1e-6)
    assert r.p == pytest.approx(2 * scipy_stats.t.sf(2 / math.sqrt(4 / 3), 2))
    quiet = stats.dersimonian_laird(np.array([1.0, 1.2]), np.ones(2))  # spread below the noise: tau2 = 0
    # the Hartung-Knapp se is floored at DerSimonian-Laird's: two studies agreeing by chance never narrow it
    assert quiet.hk_hi - quiet.estimate == pytest.approx(12.706205 * math.sqrt(1 / 2), rel=1e-6)
    assert quiet.tau2 == 0 and quiet.estimate == pytest.approx(1.1) and quiet.i2 == 0
    assert math.isnan(stats.dersimonian_laird(np.array([1.0]), np.ones(1)).estimate)  # one study: no summary
    with pytest.raises(ValueError, match="variance"):
        stats.dersimonian_laird(np.array([1.0, 2.0]), np.array([1.0, 0.0]))


# --- runs that did not train, through a real MLflow store --------------------------------------------------

ARCHS = ("vgg11", "resnet18", "densenet121")
SEEDS = [0, 1, 2]
CELLS = {  # ablation -> (technique, with, without)
    "baseline": ("", "baseline", "baseline"),
    "no_bn": ("batch norm", "baseline", "no_bn"),
    "dropout": ("dropout", "dropout", "baseline"),
}
ACC = {"baseline": [0.60, 0.63, 0.61], "no_bn": [0.50, 0.55, 0.52], "dropout": [0.62, 0.64, 0.615]}
COLLAPSED = 0.0965  # one class predicted: 965 of 10,000 test images
# densenet121 without batch norm collapses on every seed; vgg11's dropout collapses on seed 1 only
DID_NOT_TRAIN_RUNS = {("densenet121", "no_bn", s) for s in SEEDS} | {("vgg11", "dropout", 1)}


def log_runs(uri: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifarbench")
    for arch in ARCHS:
        for ablation, accs in ACC.items():
            for seed, acc in zip(SEEDS, accs):
                failed = (arch, ablation, seed) in DID_NOT_TRAIN_RUNS
                tags = {**run_identity("default", arch, ablation, seed), CURRENT: "true",
                        TRAINED: str(not failed).lower(), DID_NOT_TRAIN: "one class predicted" if failed else ""}
                if arch == "resnet18":  # an older run, logged before the tag existed: counts as trained
                    tags.pop(TRAINED)
                    tags.pop(DID_NOT_TRAIN)
                run = client.create_run(experiment, run_name=f"{arch}/{ablation}/seed{seed}", tags=tags)
                client.log_metric(run.info.run_id, "test_acc", COLLAPSED if failed else acc + 0.001 * ARCHS.index(arch))
                client.set_terminated(run.info.run_id)


def plan() -> pd.DataFrame:
    return pd.DataFrame([{
        "arch": a, "ablation": b, "group": "regularization", "about": b, "seeds": SEEDS, "early_stop": False,
        "epochs": 2, "applies": True, "technique": technique, "with_": with_, "without": without,
    } for a in ARCHS for b, (technique, with_, without) in CELLS.items()])  # fmt: skip


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> pd.DataFrame:
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    log_runs(uri)
    return load_runs(uri, "cifarbench", "default")


def test_runs_that_did_not_train_are_named_and_kept_out_of_every_buys_value_and_the_summary(logged):
    expected = plan()
    assert set(zip(*tables.untrained_runs(logged)[["arch", "ablation", "seed"]].to_numpy().T)) == DID_NOT_TRAIN_RUNS
    buys = tables.paired_deltas(logged, expected, buys=True).set_index(["arch", "ablation"])
    collapsed = buys.loc[("densenet121", "no_bn")]
    assert collapsed["state"] == "did not train" and np.isnan(collapsed["delta"]) and np.isnan(collapsed["p_holm"])
    partial = buys.loc[("vgg11", "dropout")]  # seed 1 left out of the pair, seeds 0 and 2 kept
    assert partial["state"] == "ok" and partial["n"] == 2 and partial["untrained"] == 1
    assert partial["delta"] == pytest.approx(np.mean([0.62 - 0.60, 0.615 - 0.61]))
    assert buys.loc[("resnet18", "no_bn"), "n"] == 3  # untagged runs count as trained
    for arch in ("vgg11", "resnet18"):  # no collapsed accuracy in any ok value
        assert buys.loc[(arch, "no_bn"), "delta"] == pytest.approx(np.subtract(ACC["baseline"], ACC["no_bn"]).mean())
    effect = tables.effects(buys.reset_index(), expected)
    bn = effect.loc["batch norm"]
    assert bn["archs"] == bn["re_archs"] == 2 and bn["did_not_train"] == 1
    ok = buys.loc[[("vgg11", "no_bn"), ("resnet18", "no_bn")]]
    summary = stats.dersimonian_laird(ok["delta"].to_numpy(), (ok["sd"] ** 2 / ok["n"]).to_numpy())
    assert bn["re_delta"] == pytest.approx(summary.estimate) and bn["re_lo"] == pytest.approx(summary.hk_lo)
    assert bn["mean_delta"] == pytest.approx(ok["delta"].mean())


def test_the_report_lists_runs_that_did_not_train_and_the_leaderboard_leaves_them_out(logged):
    expected = plan()
    failed = logged.copy()
    failed.loc[(failed["arch"] == "vgg11") & (failed["ablation"] == "baseline") & (failed["seed"] == 2),
               f"tags.{TRAINED}"] = "false"
    board = tables.leaderboard(failed, expected)
    assert board.loc["vgg11", "n"] == 2 and board.loc["vgg11", "untrained"] == 1
    assert board.loc["vgg11", "test_acc_mean"] == pytest.approx(np.mean(ACC["baseline"][:2]))
    inputs = Inputs("default", list(ARCHS), list(CELLS), expected, logged, pd.DataFrame(), pd.DataFrame(),
                    pd.DataFrame(), {}, {})
    buys = tables.paired_deltas(logged, expected, buys=True)
    section = matrix_section(buys, tables.paired_deltas(logged, expected), tables.leaderboard(logged, expected),
                             tables.missing_runs(logged, expected), inputs)
    named = [b.frame for b in section.blocks if isinstance(b, Table) and "why" in b.frame]
    assert len(named) == 1 and set(named[0]["run"]) == {f"{a}/{b}/seed{s}" for a, b, s in DID_NOT_TRAIN_RUNS}
    assert set(named[0]["why"]) == {"one class predicted"}
    assert "did not train" in to_markdown(Document("t", [], [section]))
    shown = [b.frame for b in leaderboard_section(board, inputs).blocks if isinstance(b, Table)][0]
    assert shown.loc["vgg11", "seeds"] == 2
