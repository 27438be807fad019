"""Tonight against the baseline, per (architecture, ablation) cell. Pure functions on DataFrames.

A cell summary (`summarize`, and the rows of baseline.json) has the columns SUMMARY:
    n             seeds that finished and trained; their test accuracy gives mean and std (sample sd)
    diverged      seeds whose loss stopped being finite
    did_not_train seeds that finished but did not train (MLflow tag trained=false: accuracy at chance, one
                  class predicted), never averaged
    images_per_s  median over seeds of each run's median training images/s per epoch
    hardware      "<fast.device> / <host_cpu> / <host_gpu>" as the runs recorded it
    config        the cell's config hash(es) as its runs recorded them (model, training, data budget)

Accuracy: a cell regresses when tonight's mean is below the baseline's by more than
max(k * sigma, floor). sigma is the standard error of the difference of the two means, from the seed
sd pooled over both nights (more degrees of freedom than either alone):
    sigma = s_pooled * sqrt(1/n_tonight + 1/n_baseline)
With one seed per side there is no spread to pool and the floor alone decides.

A cell whose config differs from the baseline's (an edited budget, other test images or seeds) is "config
changed": its difference is shown but judges nothing, since it measures the edit, not a regression. More
seeds diverged or not trained than in the baseline fail the night whatever the config: no edit is meant to
leave a network untrained. A
baseline recorded before configs were kept has none: every cell is "config changed" until a night made
under the current params is promoted (`cifarbench nightly --update-baseline`).

Throughput: the ratio tonight / baseline, only when both recorded the same hardware; a different device or
CPU says nothing about the code, so the cell is marked "not compared".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from cifarbench.nightly.config import NightlyConfig
from cifarbench.tracking.read import column
from cifarbench.tracking.tags import CONFIG_HASH, FAST, HOST_CPU, HOST_GPU, TRAINED

CELL = ["arch", "ablation"]
HARDWARE = [column(f"{FAST}device"), column(HOST_CPU), column(HOST_GPU)]  # as each run recorded it
SUMMARY = [*CELL, "n", "mean", "std", "diverged", "did_not_train", "images_per_s", "hardware", "config"]
GATING = {"accuracy": ("regressed", "diverged", "did not train"), "throughput": ("slower",)}


def cell_name(row) -> str:
    return f"{row['arch']}/{row['ablation']}"


def summarize(runs: pd.DataFrame, cells: list[tuple[str, str]]) -> pd.DataFrame:
    """One summary row per cell in `cells` (in that order) from current training runs, one row per seed.

    `runs` is a `cifarbench.tracking.read.load_runs` frame (arch, ablation, status, metrics.test_acc,
    metrics.images_per_s, tags.fast.device, tags.host_cpu, tags.host_gpu). A cell without runs gets n = 0.
    """
    runs = runs.reindex(columns=[*CELL, "status", "metrics.test_acc", "metrics.images_per_s", *HARDWARE,
                                 column(CONFIG_HASH), column(TRAINED)])
    rows = []
    for arch, ablation in cells:
        mine = runs[(runs["arch"] == arch) & (runs["ablation"] == ablation)]
        untrained = (mine["status"] != "diverged") & (mine[column(TRAINED)] == "false")
        done = mine[(mine["status"] != "diverged") & ~untrained]
        accs = done["metrics.test_acc"].dropna()
        speeds = mine["metrics.images_per_s"].dropna()
        hardware = sorted({" / ".join(map(str, ids)) for ids in
                           zip(*(mine[c] for c in HARDWARE))})
        rows.append({
            "arch": arch, "ablation": ablation, "n": len(accs),
            "mean": accs.mean() if len(accs) else math.nan,
            "std": accs.std(ddof=1) if len(accs) > 1 else 0.0,
            "diverged": int((mine["status"] == "diverged").sum()),
            "did_not_train": int(untrained.sum()),
            "images_per_s": speeds.median() if len(speeds) else math.nan,
            "hardware": " + ".join(hardware),
            "config": " + ".join(sorted(mine[column(CONFIG_HASH)].dropna().astype(str).unique())),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY)


def sigma(n: int, std: float, n_base: int, std_base: float) -> float:
    """Standard error of (mean - mean_base) from the pooled seed sd; 0 without degrees of freedom."""
    dof = n + n_base - 2
    if n < 1 or n_base < 1 or dof < 1:
        return 0.0
    pooled = ((n - 1) * std**2 + (n_base - 1) * std_base**2) / dof
    return math.sqrt(pooled * (1 / n + 1 / n_base))


@dataclass(frozen=True)
class Comparison:
    """One row per cell of tonight or the baseline: both summaries (`_base` suffix) and the verdicts.

    accuracy:   regressed | improved | steady | diverged / did not train (more seeds than in the baseline) |
                config changed | missing | new
    throughput: slower | faster | steady | not compared (other hardware) | "" (no numbers)
    """

    cells: pd.DataFrame

    def gating(self) -> pd.DataFrame:
        """The cells that fail the night."""
        cells = self.cells
        return cells[cells["accuracy"].isin(GATING["accuracy"]) | cells["throughput"].isin(GATING["throughput"])]

    @property
    def failed(self) -> bool:
        return not self.gating().empty

    def regressed_names(self) -> list[str]:
        return [f"{cell_name(r)} ({_why(r)})" for _, r in self.gating().iterrows()]

    def count(self, column: str, verdict: str) -> int:
        return int((self.cells[column] == verdict).sum())


def compare(tonight: pd.DataFrame, baseline: pd.DataFrame, cfg: NightlyConfig) -> Comparison:
    """Each cell of tonight or the baseline, compared (both frames have the SUMMARY columns)."""
    base = baseline.reindex(columns=SUMMARY)
    merged = tonight.reindex(columns=SUMMARY).merge(base, on=CELL, how="outer", suffixes=("", "_base"))
    for column in ("n", "diverged", "did_not_train", "n_base", "diverged_base", "did_not_train_base"):
        merged[column] = merged[column].fillna(0).astype(int)
    verdicts = [_accuracy(row, cfg) | _throughput(row, cfg) for _, row in merged.iterrows()]
    cells = pd.concat([merged, pd.DataFrame(verdicts, index=merged.index)], axis=1)
    return Comparison(cells.sort_values(CELL, kind="stable").reset_index(drop=True))


def _accuracy(row, cfg: NightlyConfig) -> dict:
    s = sigma(row["n"], row["std"], row["n_base"], row["std_base"])
    threshold = max(cfg.k * s, cfg.floor)
    delta = row["mean"] - row["mean_base"] if row["n"] and row["n_base"] else math.nan
    if row["diverged"] > row["diverged_base"]:
        verdict = "diverged"
    elif row["did_not_train"] > row["did_not_train_base"]:
        verdict = "did not train"
    elif row["n"] == 0:
        verdict = "missing"
    elif row["n_base"] == 0:
        verdict = "new"
    elif not isinstance(row["config_base"], str) or row["config"] != row["config_base"]:
        verdict = "config changed"
    elif delta < -threshold:
        verdict = "regressed"
    elif delta > threshold:
        verdict = "improved"
    else:
        verdict = "steady"
    return {"accuracy": verdict, "delta": delta, "sigma": s, "threshold": threshold}


def _throughput(row, cfg: NightlyConfig) -> dict:
    speed, base = row["images_per_s"], row["images_per_s_base"]
    if not (speed > 0 and base > 0):
        return {"throughput": "", "ratio": math.nan}
    if row["hardware"] != row["hardware_base"]:
        return {"throughput": "not compared", "ratio": math.nan}
    ratio = speed / base
    verdict = "slower" if ratio < 1 - cfg.max_slowdown else "faster" if ratio > 1 / (1 - cfg.max_slowdown) else "steady"
    return {"throughput": verdict, "ratio": ratio}


def _why(row) -> str:
    reasons = []
    if row["accuracy"] == "regressed":
        reasons.append(f"accuracy {100 * row['delta']:+.2f} points, threshold {100 * row['threshold']:.2f}")
    if row["accuracy"] == "diverged":
        reasons.append(f"{row['diverged']} seed(s) diverged, baseline {row['diverged_base']}")
    if row["accuracy"] == "did not train":
        reasons.append(f"{row['did_not_train']} seed(s) did not train, baseline {row['did_not_train_base']}")
    if row["throughput"] == "slower":
        reasons.append(f"throughput x{row['ratio']:.2f}")
    return "; ".join(reasons)
