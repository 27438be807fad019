"""The report's numbers, as plain DataFrames (accuracies as fractions, exactly as logged in MLflow).

Every table is built against the plan (`expected_cells`), so a cell with no run shows as missing and a
cell the plan skips shows why, instead of either silently disappearing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from cifarbench.plan import BASELINE, AblationSpec, Cell
from cifarbench.tracking.read import column
from cifarbench.tracking.tags import CONFIG_HASH

ACC = "metrics.test_acc"
CONFIDENCE = 0.95


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
    """Per architecture, its baseline: test accuracy over seeds, size, cost and the lr/wd it trained with."""
    base = runs[runs["ablation"] == BASELINE]
    rows = []
    for arch in expected["arch"].unique():
        r = base[base["arch"] == arch]
        acc = r[ACC].dropna()
        rows.append({
            "arch": arch, "n": len(acc),
            "test_acc_mean": acc.mean() if len(acc) else np.nan,
            "test_acc_std": acc.std(ddof=1) if len(acc) > 1 else np.nan,
            "params": _first(r, "metrics.params"), "flops_per_image": _first(r, "metrics.flops_per_image"),
            "train_seconds": _mean(r, "metrics.train_seconds"), "images_per_s": _mean(r, "metrics.images_per_s"),
            "optimizer": _first(r, "params.train.optimizer.name", text=True),
            "lr": _first(r, "params.train.optimizer.lr"), "weight_decay": _first(r, "params.train.optimizer.weight_decay"),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("arch")


def paired_deltas(runs: pd.DataFrame, expected: pd.DataFrame, *, buys: bool = False) -> pd.DataFrame:
    """Per (arch, ablation): a paired difference of test accuracies, by seed. Plain: the ablation minus the
    architecture's baseline. `buys=True`: what the ablation's technique buys, acc(`with`) - acc(`without`)
    as the ablation names them in params.yaml (positive = the technique helps).

    delta_s = acc(with, s) - acc(without, s) over the seeds both have. The 95% interval is
    mean +- t(0.975, df) * sd / sqrt(n), where sd is the seed-to-seed sd of the paired deltas **pooled over
    the architecture's comparisons** (squared deviations from each cell's own mean, over df = sum of n - 1).
    With 2 seeds a cell alone has 1 degree of freedom (t = 12.7: intervals too wide to resolve anything);
    the seed noise belongs to the architecture and its budget, which all its cells share, so pooling ~12
    cells gives ~12 degrees of freedom (t = 2.2). A comparison equal on every seed (an early stop that never
    fired) carries no noise information and stays out of the pool. A comparison involving an early-stopped
    cell has noise of its own (each seed stops at its own epoch), so it stays out of the pool too and its
    interval uses its own seeds' sd.
    `state`: ok | n/a (the plan skips one of its cells) | not planned (one of its cells is no ablation of the
    plan) | missing (no run of a cell for a shared seed) | reference (the baseline row: compared with nothing).
    """
    acc = runs.set_index(["arch", "ablation", "seed"])[ACC]
    plan = expected.set_index(["arch", "ablation"])
    rows, pools = [], {}  # arch, or (arch, ablation) for an early-stopped comparison -> [(row index, deltas)]
    for e in expected.itertuples():
        pair = (e.with_, e.without) if buys else (e.ablation, BASELINE)
        row = {"arch": e.arch, "ablation": e.ablation, "group": e.group, "technique": e.technique, "state": "ok",
               "n": 0, "delta": np.nan, "lo": np.nan, "hi": np.nan, "excludes_zero": False, "sd": np.nan, "df": 0}
        cells = [plan.loc[(e.arch, name)] for name in pair if (e.arch, name) in plan.index]
        if e.ablation == BASELINE and (buys or not e.applies):
            row["state"] = "reference" if buys else "n/a"
        elif len(cells) < 2:
            row["state"] = "not planned"  # `with` or `without` is not an ablation of this params.yaml
        elif not all(c["applies"] for c in cells):
            row["state"] = "n/a"
        else:
            seeds = [s for s in e.seeds if all((e.arch, name, s) in acc.index for name in pair)]
            diffs = np.array([acc[(e.arch, pair[0], s)] - acc[(e.arch, pair[1], s)] for s in seeds], dtype=float)
            row.update(n=len(diffs), state="ok" if len(diffs) else "missing")
            if len(diffs):
                row["delta"] = diffs.mean()
            if pair[0] != pair[1]:
                early = any(c["early_stop"] for c in cells)
                pools.setdefault((e.arch, e.ablation) if early else e.arch, []).append((len(rows), diffs))
        rows.append(row)
    for cells in pools.values():
        pool = [d for _, d in cells if len(d) >= 2 and np.any(d != 0)]
        df = sum(len(d) - 1 for d in pool)
        if df == 0:
            continue
        sd = math.sqrt(sum(((d - d.mean()) ** 2).sum() for d in pool) / df)
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, df)
        for i, d in cells:
            if len(d):
                row, half = rows[i], t * sd / math.sqrt(len(d))
                row.update(sd=sd, df=df, lo=row["delta"] - half, hi=row["delta"] + half)
                row["excludes_zero"] = bool(row["lo"] > 0 or row["hi"] < 0)
    return pd.DataFrame(rows)


def effects(buys: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Per technique (`paired_deltas(..., buys=True)`), what it buys averaged over the architectures where
    both its cells ran, and on how many it clearly helped or hurt (95% interval above / below zero)."""
    about = expected.drop_duplicates("ablation").set_index("ablation")["about"]
    rows = []
    for ablation, d in buys[buys["state"] != "reference"].groupby("ablation", sort=False):
        ok = d[d["state"] == "ok"]
        up = int((ok["excludes_zero"] & (ok["delta"] > 0)).sum())
        down = int((ok["excludes_zero"] & (ok["delta"] < 0)).sum())
        rows.append({
            "technique": d["technique"].iloc[0] or ablation, "ablation": ablation, "group": d["group"].iloc[0],
            "about": about[ablation], "archs": len(ok), "mean_delta": ok["delta"].mean() if len(ok) else np.nan,
            "min_delta": ok["delta"].min() if len(ok) else np.nan, "max_delta": ok["delta"].max() if len(ok) else np.nan,
            "helped": up, "hurt": down, "verdict": _verdict(up, down, len(ok)),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["group", "mean_delta"], ascending=[False, False], na_position="last").set_index("technique")


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


def _verdict(up: int, down: int, n: int) -> str:
    """The verdict follows the intervals: "helps" only where some interval lies above 0 and none below."""
    if n == 0:
        return "no runs"
    if up and down:
        return "mixed"
    return f"helps ({up} of {n})" if up else f"hurts ({down} of {n})" if down else "no clear effect"


def pareto_front(cost: pd.Series, acc: pd.Series) -> pd.Series:
    """True where no other point is at least as cheap and at least as accurate, and strictly better in one."""
    ok = cost.notna() & acc.notna()
    front = pd.Series(False, index=cost.index)
    for i in cost.index[ok]:
        dominated = ((cost[ok] <= cost[i]) & (acc[ok] >= acc[i]) & ((cost[ok] < cost[i]) | (acc[ok] > acc[i]))).any()
        front[i] = not dominated
    return front


def tuning(studies: pd.DataFrame, tuned: dict[str, dict | None], archs: list[str]) -> pd.DataFrame:
    """Per architecture: the tune stage's choice (from its file) and the study's trials (from MLflow)."""
    by_arch = studies.set_index("arch") if len(studies) else pd.DataFrame()
    rows = []
    for arch in archs:
        s = by_arch.loc[arch] if arch in by_arch.index else pd.Series(dtype=object)
        complete, pruned, failed = (s.get(f"metrics.trials_{k}", np.nan) for k in ("complete", "pruned", "failed"))
        total = np.nansum([complete, pruned, failed])
        rows.append({
            "arch": arch, "tuned": tuned.get(arch) is not None, "study": "found" if len(s) else "missing",
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
