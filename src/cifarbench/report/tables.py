"""The report's numbers, as plain DataFrames (accuracies as fractions, exactly as logged in MLflow).

Every table is built against the plan (`expected_cells`), so a cell with no run shows as missing and a
cell the plan skips shows why, instead of either silently disappearing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cifarbench.plan import BASELINE, AblationSpec, Cell
from cifarbench.report import stats
from cifarbench.tracking.read import column
from cifarbench.tracking.tags import CONFIG_HASH, DID_NOT_TRAIN, TRAINED

ACC = "metrics.test_acc"
PER_CLASS = "metrics.test_acc_"  # + a class name: the run's test accuracy on that class's images (runner.py)


def measured_ablations(expected: pd.DataFrame) -> list[str]:
    """The ablations some architecture runs in this preset (and the baseline), in plan order: one no
    architecture runs (an ablation left to the nightly and full presets) gets no column of n/a."""
    applies = expected.groupby("ablation", sort=False)["applies"].any()
    return [b for b in expected["ablation"].drop_duplicates() if b == BASELINE or applies[b]]


def expected_cells(cells: list[Cell], ablations: dict[str, AblationSpec] | None = None) -> pd.DataFrame:
    """The plan as a frame: one row per (arch, ablation), in params.yaml order, with the question each
    ablation answers (`technique`: acc(`with`) - acc(`without`); empty for the baseline)."""
    buys = {name: spec.buys for name, spec in (ablations or {}).items() if spec.buys}
    return pd.DataFrame([{
        "arch": c.arch, "ablation": c.ablation, "group": c.group, "about": c.about, "seeds": list(c.seeds),
        "epochs": c.train.epochs, "early_stop": c.train.early_stop.enabled,
        "applies": c.not_applicable is None, "not_applicable": c.not_applicable or "",
        "config_hash": None if c.not_applicable else c.config_hash(),
        "technique": buys[c.ablation].technique if c.ablation in buys else "",
        "with_": buys[c.ablation].with_ if c.ablation in buys else c.ablation,
        "without": buys[c.ablation].without if c.ablation in buys else BASELINE,
    } for c in cells])  # fmt: skip


def select_current(runs: pd.DataFrame, expected: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs of this plan, runs left out): a run counts only if its cell and seed are in the plan and its
    config hash equals the cell's config now, so a run made under other params (an older commit whose cell
    has not been rerun yet) is left out and its cell shows as missing."""
    merged = runs.merge(expected[["arch", "ablation", "seeds", "config_hash"]], on=["arch", "ablation"], how="left",
                        suffixes=("", ".plan"), indicator=True)
    in_plan = merged["_merge"].eq("both") & merged.apply(
        lambda r: isinstance(r["seeds"], list) and r["seed"] in r["seeds"], axis=1)
    ok = in_plan & merged[column(CONFIG_HASH)].eq(merged["config_hash"])
    kept = merged[ok].drop(columns=["_merge", "seeds", "config_hash"])
    return kept.reset_index(drop=True), runs[~ok.to_numpy()].reset_index(drop=True)


def missing_runs(runs: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Every (arch, ablation, seed) the plan runs that has no current run."""
    have = set(zip(runs["arch"], runs["ablation"], runs["seed"]))
    rows = [{"arch": e.arch, "ablation": e.ablation, "seed": s} for e in expected.itertuples()
            if e.applies for s in e.seeds if (e.arch, e.ablation, s) not in have]
    return pd.DataFrame(rows, columns=["arch", "ablation", "seed"])


def leaderboard(runs: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, its baseline: test accuracy over the seeds that trained (`untrained`: runs left out
    of it because they did not train), size, cost and the lr/wd it trained with (over all its runs)."""
    base = runs[runs["ablation"] == BASELINE]
    ok = trained(base)
    rows = []
    for arch in expected["arch"].unique():
        r = base[base["arch"] == arch]
        acc = r.loc[ok[r.index], ACC].dropna()
        rows.append({
            "arch": arch, "n": len(acc), "untrained": int((~ok[r.index]).sum()),
            "test_acc_mean": acc.mean() if len(acc) else np.nan,
            "test_acc_std": acc.std(ddof=1) if len(acc) > 1 else np.nan,
            "params": _first(r, "metrics.params"), "flops_per_image": _first(r, "metrics.flops_per_image"),
            "train_seconds": _mean(r, "metrics.train_seconds"), "images_per_s": _mean(r, "metrics.images_per_s"),
            "optimizer": _first(r, "params.train.optimizer.name", text=True),
            "lr": _first(r, "params.train.optimizer.lr"), "weight_decay": _first(r, "params.train.optimizer.weight_decay"),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("arch")


def trained_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """The baseline runs that trained: the ones every per-architecture number of the report averages."""
    base = runs[runs["ablation"] == BASELINE]
    return base[trained(base)]


def per_class_accuracy(runs: pd.DataFrame, archs: list[str]) -> pd.DataFrame:
    """Architecture x class: each baseline's test accuracy on that class's images (a fraction), the mean over
    its seeds that trained (NaN where none), in the order the classes were logged; `seeds`: how many. No
    class columns where no run logged per-class metrics."""
    if "ablation" not in runs:
        return pd.DataFrame(index=pd.Index(archs, name="arch"))
    base = trained_baselines(runs)
    classes = [c for c in runs.columns if c.startswith(PER_CLASS)]
    table = base.groupby("arch")[classes].mean().reindex(archs)
    table.columns = [c.removeprefix(PER_CLASS) for c in classes]
    table["seeds"] = base.dropna(subset=classes, how="all").groupby("arch").size().reindex(archs, fill_value=0)
    return table.rename_axis("arch")


@dataclass(frozen=True)
class Confusion:
    counts: pd.DataFrame  # test images, true class (rows) x predicted class (columns), summed over `seeds`
    seeds: int            # baseline seeds whose matrix was found
    trained: int          # baseline seeds that trained (more than `seeds`: some run logged no matrix)

    def rates(self) -> pd.DataFrame:
        """Row-normalized: of each true class's images, the fraction predicted as each class."""
        return self.counts.div(self.counts.sum(axis=1).replace(0, np.nan), axis=0)

    def most_confused(self) -> tuple[str, str, float]:
        """(true class, predicted class, fraction of the true class's images): the largest off-diagonal rate."""
        rates = self.rates().to_numpy(dtype=float, copy=True)
        np.fill_diagonal(rates, np.nan)
        i, j = np.unravel_index(np.nanargmax(rates), rates.shape)
        return self.counts.index[i], self.counts.columns[j], float(rates[i, j])


def baseline_confusions(runs: pd.DataFrame, matrices: dict[str, pd.DataFrame], archs: list[str]) -> dict[str, Confusion]:
    """Per architecture (those with any matrix, in `archs` order): its baseline's confusion matrices summed
    over the seeds that trained. `matrices`: run id -> counts (tracking.read.load_confusions)."""
    if not matrices or "ablation" not in runs:
        return {}
    base = trained_baselines(runs)
    out = {}
    for arch in archs:
        ids = base.loc[base["arch"] == arch, "run_id"]
        found = [matrices[i] for i in ids if i in matrices]
        if found:
            total = found[0]
            for m in found[1:]:
                total = total.add(m, fill_value=0)
            out[arch] = Confusion(total, len(found), len(ids))
    return out


def trained(runs: pd.DataFrame) -> pd.Series:
    """True for each run that trained: its TRAINED tag is not 'false' (older runs without the tag count as
    trained)."""
    tag = runs.get(column(TRAINED), pd.Series(index=runs.index, dtype=object))
    return ~tag.astype(str).str.strip().str.lower().eq("false")


def untrained_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that did not train, named with their reason (tag DID_NOT_TRAIN), never averaged."""
    bad = runs[~trained(runs)]
    reason = bad.get(column(DID_NOT_TRAIN), pd.Series(index=bad.index, dtype=object)).fillna("").astype(str)
    out = pd.DataFrame({"arch": bad["arch"], "ablation": bad["ablation"], "seed": bad["seed"],
                        "run_name": bad.get("run_name", pd.Series(index=bad.index, dtype=object)),
                        "reason": reason.replace("", "no reason logged")})
    return out.sort_values(["arch", "ablation", "seed"]).reset_index(drop=True)


# The baseline and its cells without augmentation (aug_none) and without any regularization (no_reg).
FIT_CELLS = (BASELINE, "aug_none", "no_reg")
FIT_MEASURES = {"metrics.train_acc": "train", "metrics.best_val_acc": "val"}


def fit_regime(runs: pd.DataFrame, archs: list[str]) -> pd.DataFrame:
    """How far each network fits its training images, from training and validation accuracy only: per
    architecture, for each of FIT_CELLS that ran, the last epoch's training accuracy and the best validation
    accuracy (fractions), means over the runs that trained; columns `<cell> train` and `<cell> val`. A network
    near 100 % training accuracy without augmentation or regularization has memorized its training images (the
    regime where regularization has something to correct); far below it, it under-fits at its budget."""
    measures = [m for m in FIT_MEASURES if m in runs]
    ok = runs[trained(runs) & runs["ablation"].isin(FIT_CELLS)] if measures and "ablation" in runs else runs.iloc[:0]
    if ok.empty:
        return pd.DataFrame(index=pd.Index(archs, name="arch"))
    means = ok.groupby(["arch", "ablation"])[measures].mean()
    columns = {f"{cell} {FIT_MEASURES[m]}": means[m].xs(cell, level="ablation")
               for cell in FIT_CELLS if cell in means.index.get_level_values("ablation") for m in measures}
    return pd.DataFrame(columns).reindex(archs).rename_axis("arch")


def paired_deltas(runs: pd.DataFrame, expected: pd.DataFrame, *, buys: bool = False) -> pd.DataFrame:
    """Per (arch, ablation): a paired difference of test accuracies, by seed. Plain: the ablation minus the
    architecture's baseline. `buys=True`: what the ablation's technique buys, acc(`with`) - acc(`without`)
    as the ablation names them in params.yaml (positive = the technique helps).

    delta_s = acc(with, s) - acc(without, s) over the seeds where both cells have a run that trained; each
    comparison's 95% interval and p-value come from its own differences alone (`stats.paired_t`: t with
    df = n - 1; no interval with n < 2). Then over the table's family (every `ok` comparison with a
    p-value): `p_holm` and `p_bh` adjusted p-values, `bh` = survives Benjamini-Hochberg at 0.05 (the
    headline: false discovery rate 5 %), `holm` = survives Holm at 0.05 (familywise), and `excludes_zero` =
    the raw interval excludes 0 (p < 0.05). `untrained`: seeds left out because a run of
    either cell did not train.
    `state`: ok | n/a (the plan skips one of its cells) | not planned (one of its cells is no ablation of the
    plan) | did not train (a cell whose runs did not train, with fewer than 2 that did) | missing (no pair
    of trained runs for a shared seed) | reference (the baseline row: compared with nothing).
    """
    ok = trained(runs)
    acc = runs[ok].set_index(["arch", "ablation", "seed"])[ACC]
    failed = set(zip(runs.loc[~ok, "arch"], runs.loc[~ok, "ablation"], runs.loc[~ok, "seed"]))
    plan = expected.set_index(["arch", "ablation"])
    rows = [_comparison(e, (e.with_, e.without) if buys else (e.ablation, BASELINE), plan, acc, failed, buys)
            for e in expected.itertuples()]
    return _adjusted(pd.DataFrame(rows))


def _comparison(e, pair: tuple[str, str], plan: pd.DataFrame, acc: pd.Series, failed: set, buys: bool) -> dict:
    """One row of paired_deltas: the state of the comparison `pair` = (with, without) of plan row `e`, and
    its paired t statistics where it is ok."""
    row = {"arch": e.arch, "ablation": e.ablation, "group": e.group, "technique": e.technique,
           "state": _planned_state(e, pair, plan, buys), "n": 0, "untrained": 0, "delta": np.nan, "lo": np.nan,
           "hi": np.nan, "sd": np.nan, "df": 0, "p": np.nan}
    if row["state"] != "ok":
        return row
    has = {name: [s for s in e.seeds if (e.arch, name, s) in acc.index] for name in pair}
    bad = {name: [s for s in e.seeds if (e.arch, name, s) in failed] for name in pair}
    seeds = [s for s in e.seeds if all(s in has[name] for name in pair)]
    row["untrained"] = sum(1 for s in e.seeds if any(s in bad[name] for name in pair))
    if any(not has[name] and not bad[name] for name in pair):  # a cell nobody ran: missing, whatever the other did
        row["state"] = "missing"
        return row
    if any(bad[name] and len(has[name]) < 2 for name in pair):
        row["state"] = "did not train"
        return row
    if not seeds:
        row["state"] = "missing"
        return row
    t = stats.paired_t(np.array([acc[(e.arch, pair[0], s)] - acc[(e.arch, pair[1], s)] for s in seeds]))
    row.update(n=t.n, delta=t.mean, lo=t.lo, hi=t.hi, sd=t.sd, df=t.df, p=t.p)
    return row


def _planned_state(e, pair: tuple[str, str], plan: pd.DataFrame, buys: bool) -> str:
    """What the plan alone says of a comparison: reference, not planned, n/a, or ok (runs decide the rest)."""
    if e.ablation == BASELINE:
        return "reference" if buys or e.applies else "n/a"
    cells = [plan.loc[(e.arch, name)] for name in pair if (e.arch, name) in plan.index]
    if len(cells) < 2:
        return "not planned"  # `with` or `without` is not an ablation of this params.yaml
    return "ok" if all(c["applies"] for c in cells) else "n/a"


def _adjusted(table: pd.DataFrame) -> pd.DataFrame:
    """Adds the multiplicity columns over the family: every ok comparison with a p-value."""
    family = table["state"].eq("ok") & table["p"].notna()
    p = table["p"].where(family).to_numpy(dtype=float)
    table["p_holm"], table["p_bh"] = stats.holm(p), stats.bh(p)
    table["excludes_zero"] = family & (table["p"] < stats.ALPHA)
    table["holm"] = family & (table["p_holm"] < stats.ALPHA)
    table["bh"] = family & (table["p_bh"] < stats.ALPHA)
    return table


def effects(buys: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Per technique (`paired_deltas(..., buys=True)`): the random-effects estimate over the architectures
    (DerSimonian-Laird tau2; `re_delta` with its Hartung-Knapp 95% interval `re_lo`/`re_hi`, `tau2`, `i2`,
    p-value `re_p` and `re_p_bh` adjusted over the techniques) and the verdict it gives; then the plain mean
    and range over architectures, and on how many the BH-corrected comparison lies above (`helped`) or below
    (`hurt`) zero (`holm_helped`/`holm_hurt`: the familywise view). `outside`: the architectures left out of the summary or entered with
    a floored standard error (`_study_variances`)."""
    about = expected.drop_duplicates("ablation").set_index("ablation")["about"]
    rows = []
    for ablation, d in buys[(buys["state"] != "reference") & buys["ablation"].isin(about.index)].groupby("ablation", sort=False):
        ok = d[d["state"] == "ok"]
        variances, outside = _study_variances(ok)
        entered = variances.notna()
        summary = stats.dersimonian_laird(ok.loc[entered, "delta"].to_numpy(), variances[entered].to_numpy())
        untrained = int(d["state"].eq("did not train").sum())
        rows.append({
            "technique": d["technique"].iloc[0] or ablation, "ablation": ablation, "group": d["group"].iloc[0],
            "about": about[ablation], "archs": len(ok), "re_archs": summary.k,
            "re_delta": summary.estimate, "re_lo": summary.hk_lo, "re_hi": summary.hk_hi, "tau2": summary.tau2,
            "i2": summary.i2, "re_p": summary.p,
            "mean_delta": ok["delta"].mean() if len(ok) else np.nan,
            "min_delta": ok["delta"].min() if len(ok) else np.nan, "max_delta": ok["delta"].max() if len(ok) else np.nan,
            "helped": int((ok["bh"] & (ok["delta"] > 0)).sum()), "hurt": int((ok["bh"] & (ok["delta"] < 0)).sum()),
            "holm_helped": int((ok["holm"] & (ok["delta"] > 0)).sum()),
            "holm_hurt": int((ok["holm"] & (ok["delta"] < 0)).sum()),
            "did_not_train": untrained, "outside": outside,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["re_p_bh"] = stats.bh(table["re_p"].to_numpy(dtype=float))
    table["verdict"] = [_verdict(r) for r in table.itertuples()]
    return table.sort_values(["group", "re_delta"], ascending=[False, False], na_position="last").set_index("technique")


def _study_variances(ok: pd.DataFrame) -> tuple[pd.Series, str]:
    """Each architecture's squared standard error sd^2 / n, as it enters the random-effects summary, and a
    note naming the exceptions. n < 2: no standard error, left out (NaN). sd = 0 (every seed differs by
    exactly the same amount: noise below one test image, not no noise): floored at the smallest positive
    squared standard error of this technique on another architecture, so it weighs like the most precise
    one instead of taking all the weight; left out if there is none."""
    var = (ok["sd"] ** 2 / ok["n"]).where(ok["n"] >= 2)
    positive = var[var > 0]
    zero = var.eq(0)
    var[zero] = positive.min() if len(positive) else np.nan
    notes = [f"{a} (1 seed)" for a in ok.loc[ok["n"] < 2, "arch"]]
    notes += [f"{a} ({'se 0, floored' if len(positive) else 'se 0, left out'})" for a in ok.loc[zero, "arch"]]
    return var, ", ".join(notes)


def early_stopping(runs: pd.DataFrame, expected: pd.DataFrame, buys: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, what each early-stopped cell buys: epochs run (mean over seeds) of those planned,
    the share of training saved, and the test accuracy gain over the same cell trained to the end."""
    rows = []
    gains = buys.set_index(["arch", "ablation"])
    for e in expected[expected["early_stop"] & expected["applies"]].itertuples():
        r = runs[(runs["arch"] == e.arch) & (runs["ablation"] == e.ablation)]
        ran = pd.to_numeric(r.get("metrics.stopped_epoch", pd.Series(dtype=float)), errors="coerce").mean()
        g = gains.loc[(e.arch, e.ablation)]
        rows.append({"arch": e.arch, "ablation": e.ablation, "epochs_run": ran, "epochs": e.epochs,
                     "saved": 1 - ran / e.epochs if np.isfinite(ran) else np.nan, "gain": g["delta"],
                     "lo": g["lo"], "hi": g["hi"], "state": g["state"]})
    return pd.DataFrame(rows, columns=["arch", "ablation", "epochs_run", "epochs", "saved", "gain", "lo", "hi", "state"])


def _verdict(r) -> str:
    """The verdict follows the corrected summary: "helps" only where the random-effects estimate is above 0
    with its Benjamini-Hochberg-adjusted p-value (over the techniques) below 0.05."""
    if r.archs == 0:
        return "did not train" if r.did_not_train else "no runs"
    if r.re_archs < 2:
        return "too few architectures with 2 seeds for a summary"
    if r.re_p_bh < stats.ALPHA:
        return "helps" if r.re_delta > 0 else "hurts"
    if r.re_lo > 0 or r.re_hi < 0:  # the raw interval excludes 0, the correction over techniques does not keep it
        return f"no clear effect after correction (p {r.re_p:.2g}, BH {r.re_p_bh:.2g})"
    return "no clear effect"


def pareto_front(cost: pd.Series, acc: pd.Series) -> pd.Series:
    """True where no other point is at least as cheap and at least as accurate, and strictly better in one."""
    ok = cost.notna() & acc.notna()
    front = pd.Series(False, index=cost.index)
    for i in cost.index[ok]:
        dominated = ((cost[ok] <= cost[i]) & (acc[ok] >= acc[i]) & ((cost[ok] < cost[i]) | (acc[ok] > acc[i]))).any()
        front[i] = not dominated
    return front


def tuning(studies: pd.DataFrame, tuned: dict[str, dict | None], archs: list[str]) -> pd.DataFrame:
    """Per study, by plan.tuned_key (each architecture's baseline study `vgg11`, then the own studies in
    `tuned`, `vgg11/no_bn`): the tune stage's choice (from its file) and the study's trials (from MLflow)."""
    by_key = study_rows(studies)
    order = {arch: i for i, arch in enumerate(archs)}
    keys = sorted({*archs, *tuned}, key=lambda k: (order.get(k.split("/")[0], len(archs)), k))
    rows = []
    for key in keys:
        s = by_key.loc[key] if key in by_key.index else pd.Series(dtype=object)
        complete, pruned, failed = (s.get(f"metrics.trials_{k}", np.nan) for k in ("complete", "pruned", "failed"))
        total = np.nansum([complete, pruned, failed])
        rows.append({
            "arch": key, "tuned": tuned.get(key) is not None, "study": "found" if len(s) else "missing",
            "best_lr": _num(s.get("params.best.lr")), "best_weight_decay": _num(s.get("params.best.weight_decay")),
            "best_val_acc": s.get("metrics.best_val_acc", np.nan),
            "recipe_val_acc": s.get("metrics.recipe_val_acc", np.nan),
            "gain_over_recipe": s.get("metrics.gain_over_recipe", np.nan),
            "val_acc_min": s.get("metrics.val_acc_min", np.nan), "val_acc_max": s.get("metrics.val_acc_max", np.nan),
            "trials_complete": complete, "trials_pruned": pruned, "trials_failed": failed,
            "pruned_share": pruned / total if total else np.nan,
            "importance_lr": s.get("metrics.importance.lr", np.nan),
            "importance_weight_decay": s.get("metrics.importance.weight_decay", np.nan),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("arch")


def study_rows(studies: pd.DataFrame) -> pd.DataFrame:
    """load_tuning's rows by study key (`arch`, or `arch/ablation` for an own study), the latest per key: a
    baseline study's run written before the ablation tag existed has none, and a newer one may not have
    retired it (it matched on the ablation tag)."""
    if not len(studies):
        return pd.DataFrame()
    ablation = studies.get("ablation", pd.Series(index=studies.index, dtype=object)).fillna(BASELINE)
    keys = studies["arch"].where(ablation == BASELINE, studies["arch"] + "/" + ablation)
    latest = studies.assign(key=keys).sort_values("start_time", kind="stable") if "start_time" in studies \
        else studies.assign(key=keys)
    return latest.drop_duplicates("key", keep="last").set_index("key")


def distinct(runs: pd.DataFrame, column: str) -> str:
    """The values a column takes over the runs, most common first, with counts when there are several."""
    if column not in runs or runs[column].dropna().empty:
        return "unknown"
    counts = runs[column].dropna().astype(str).value_counts()
    if len(counts) == 1:
        return counts.index[0]
    return ", ".join(f"{value} ({n} runs)" for value, n in counts.items())


def _first(frame: pd.DataFrame, column: str, text: bool = False):
    if column not in frame or frame[column].dropna().empty:
        return None if text else np.nan
    value = frame[column].dropna().iloc[0]
    return value if text else _num(value)


def _mean(frame: pd.DataFrame, column: str) -> float:
    return pd.to_numeric(frame[column], errors="coerce").mean() if column in frame else np.nan


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan
