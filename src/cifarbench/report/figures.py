"""The reports' figures (the comparison report's and the nightly trend), drawn with matplotlib's object API (no pyplot, so no global backend or state).

Each function returns a Figure; `png_bytes` renders it. Accuracies are drawn in percent, deltas in
percentage points.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

from cifarbench.plan import BASELINE

DPI = 100
MISSING_GREY = "#d9d9d9"
GROUP_COLOURS = {"regularization": "#4c72b0", "augmentation": "#dd8452", "optimization": "#55a868",
                 "architecture": "#8172b3", "baseline": "#555555"}


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def delta_heatmap(deltas: pd.DataFrame, archs: list[str], ablations: list[str], labels: dict[str, str]) -> Figure:
    """Architecture x technique (one per ablation, `labels`), colour = what it buys: test accuracy with it
    minus without it (points), with its own paired 95% interval; '*' where the comparison survives the Benjamini-Hochberg
    correction over the whole table, '°' where only its uncorrected interval excludes zero; grey cells say
    n/a, missing or did not train."""
    cells = deltas.set_index(["arch", "ablation"])
    values = np.array([[100 * cells.loc[(a, b), "delta"] for b in ablations] for a in archs], dtype=float)
    span = max(np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0, 0.5)
    fig = Figure(figsize=(1.1 * len(ablations) + 2.5, 0.75 * len(archs) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor(MISSING_GREY)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    for i, arch in enumerate(archs):
        for j, ablation in enumerate(ablations):
            c = cells.loc[(arch, ablation)]
            ax.text(j, i, _cell_label(c), ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(values[i, j]) and abs(values[i, j]) > 0.6 * span else "black")
    ax.set_xticks(range(len(ablations)), [labels[b] for b in ablations], rotation=35, ha="right")
    ax.set_yticks(range(len(archs)), archs)
    ax.tick_params(length=0)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("test accuracy with minus without (points)")
    ax.set_title("What each technique buys (* = survives Benjamini-Hochberg at 0.05; ° = uncorrected only)",
                 fontsize=10)
    return fig


def significance_mark(c: pd.Series) -> str:
    """'*' survives Benjamini-Hochberg over the table (false discovery rate 5 %), '°' only the uncorrected
    interval (or p) excludes 0, '' neither."""
    return "*" if c["bh"] else "°" if c["excludes_zero"] else ""


def _cell_label(c: pd.Series) -> str:
    if c["state"] != "ok":
        return c["state"].replace("did not train", "did not\ntrain")
    text = f"{100 * c['delta']:+.1f}{significance_mark(c)}"
    if np.isfinite(c["lo"]):
        text += f"\n[{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]"
    return text


def forest(buys: pd.DataFrame, effect: pd.DataFrame, archs: list[str]) -> Figure:
    """A forest plot per technique (`effect`'s rows, one panel each): each architecture's mean difference
    (points) with its own paired 95% interval (filled dot = survives Benjamini-Hochberg), and the random-effects estimate
    with its 95% interval as the diamond at the bottom. A comparison that is not ok is named at the right;
    a technique no architecture could compare (n/a or not planned everywhere) has no panel."""
    techniques = list(effect.index[(effect["archs"] > 0) | (effect["did_not_train"] > 0)])
    cols = min(3, len(techniques))
    rows = math.ceil(len(techniques) / cols)
    fig = Figure(figsize=(4.4 * cols, (0.26 * len(archs) + 1.3) * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    cells = buys.set_index(["ablation", "arch"])
    for ax, technique in zip(axes.flat, techniques):
        _forest_panel(ax, cells, effect.loc[technique], archs)
        ax.set_title(f"{technique}: {effect.loc[technique, 'verdict']}", fontsize=9)
    for ax in axes.flat[len(techniques):]:
        ax.axis("off")
    fig.supxlabel("test accuracy with minus without (points); diamond = random effects (DerSimonian-Laird), 95%",
                  fontsize=9)
    return fig


def _forest_panel(ax, cells: pd.DataFrame, row: pd.Series, archs: list[str]) -> None:
    colour = GROUP_COLOURS.get(row["group"], "grey")
    ys = np.arange(len(archs), 0, -1)  # first architecture on top; the summary at y = 0
    for y, arch in zip(ys, archs):
        c = cells.loc[(row["ablation"], arch)]
        if c["state"] != "ok":
            ax.text(0.98, y, c["state"], transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7,
                    color="#777777")
            continue
        if np.isfinite(c["lo"]):
            ax.plot([100 * c["lo"], 100 * c["hi"]], [y, y], color=colour, lw=1.2)
        ax.plot(100 * c["delta"], y, "o", color=colour, mfc=colour if c["bh"] else "white", ms=5)
    if np.isfinite(row["re_delta"]):
        lo, mid, hi = 100 * row["re_lo"], 100 * row["re_delta"], 100 * row["re_hi"]
        ax.fill([lo, mid, hi, mid], [0, 0.35, 0, -0.35], color="black")
    else:
        ax.text(0.98, 0, "no summary", transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7)
    ax.axvline(0, color="black", lw=0.8, ls=":")
    ax.set_yticks([*ys, 0], [*archs, "random effects"], fontsize=8)
    ax.set_ylim(-0.8, len(archs) + 0.8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def learning_curves(history: pd.DataFrame, runs: pd.DataFrame, arch: str, ablations: list[str]) -> Figure:
    """Mean over seeds per epoch: validation solid, training dashed; x marks a seed's early stop."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    acc_ax, loss_ax = fig.subplots(1, 2)
    colours = _ablation_colours(ablations)
    h = history[history["arch"] == arch]
    for ablation in ablations:
        curve = h[h["ablation"] == ablation].groupby("epoch").mean(numeric_only=True)
        if curve.empty:
            continue
        on_top = ablation == BASELINE  # drawn thick and above the ablations that equal it
        style = {"color": colours[ablation], "lw": 2.4 if on_top else 1.3, "zorder": 3 if on_top else 2}
        for ax, key, scale in ((acc_ax, "acc", 100), (loss_ax, "loss", 1)):
            ax.plot(curve.index, scale * curve[f"val_{key}"], label=ablation, **style)
            ax.plot(curve.index, scale * curve[f"train_{key}"], ls="--", alpha=0.7, **style)
        stopped = runs[(runs["arch"] == arch) & (runs["ablation"] == ablation) & runs["status"].eq("early_stopped")]
        for epoch in stopped["metrics.stopped_epoch"].dropna():
            acc_ax.plot(epoch, 100 * curve["val_acc"].get(epoch, np.nan), "x", color=colours[ablation], ms=9, mew=2)
    acc_ax.set(title=f"{arch}: accuracy (%)", xlabel="epoch")
    loss_ax.set(title=f"{arch}: loss", xlabel="epoch")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.plot([], [], color="grey", label="validation (solid)")
    loss_ax.plot([], [], color="grey", ls="--", label="training (dashed)")
    loss_ax.plot([], [], "x", color="grey", label="early stop")
    loss_ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    return fig


def _ablation_colours(ablations: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    others = [a for a in ablations if a != BASELINE]
    return {BASELINE: "black", **{a: palette[i % len(palette)] for i, a in enumerate(others)}}


def confusion_matrices(confusions: dict) -> Figure:
    """One panel per architecture (`confusions`: arch -> tables.Confusion): its baseline's confusion matrix
    summed over seeds, row-normalized (percent of each true class's images predicted as each class), one
    shared colour scale 0-100 %; the diagonal is the per-class accuracy."""
    archs = list(confusions) or ["(no confusion matrices logged)"]
    cols = min(4, len(archs))
    rows = math.ceil(len(archs) / cols)
    fig = Figure(figsize=(3.4 * cols + 0.8, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for ax, arch in zip(axes.flat, confusions):
        c = confusions[arch]
        rates = 100 * c.rates().to_numpy(dtype=float)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=100)
        labels = [str(name) for name in c.counts.columns]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(c.counts.index)), [str(name) for name in c.counts.index], fontsize=7)
        ax.tick_params(length=0)
        ax.set_title(f"{arch} (seeds: {c.seeds})", fontsize=9)
    for ax in axes.flat[len(confusions):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.03, pad=0.02).set_label("% of the true class's test images")
    fig.supxlabel("predicted class", fontsize=9)
    fig.supylabel("true class", fontsize=9)
    return fig


def pareto(board: pd.DataFrame, fronts: dict[str, pd.Series]) -> Figure:
    """Baseline test accuracy (mean, std bar) against FLOPs and against parameters; Pareto front joined."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    for ax, (column, label) in zip(fig.subplots(1, 2), (("flops_per_image", "FLOPs per image"), ("params", "parameters"))):
        ok = board.dropna(subset=[column, "test_acc_mean"])
        front = ok[fronts[column].reindex(ok.index, fill_value=False)].sort_values(column)
        ax.errorbar(ok[column], 100 * ok["test_acc_mean"], yerr=100 * ok["test_acc_std"].fillna(0), fmt="o",
                    mfc="white", color="#4c72b0", capsize=3)
        ax.plot(front[column], 100 * front["test_acc_mean"], "o-", color="#c44e52", label="Pareto front")
        for arch, row in ok.iterrows():
            ax.annotate(arch, (row[column], 100 * row["test_acc_mean"]), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
        decades = np.log10(ok[column].to_numpy(dtype=float)) if len(ok) else np.array([0.0, 1.0])
        ax.set(xscale="log", xlabel=f"{label} (log scale)", ylabel="baseline test accuracy (%)",
               xlim=(10 ** np.floor(decades.min()), 10 ** np.ceil(decades.max() + 0.05)))  # >= 1 labelled decade
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    return fig


def nightly_trend(history: pd.DataFrame) -> Figure:
    """Mean test accuracy per night, one panel per architecture, one line per ablation (baseline bold)."""
    archs = sorted(history["arch"].unique()) or ["(no nights yet)"]
    cols = min(3, len(archs))
    rows = math.ceil(len(archs) / cols)
    fig = Figure(figsize=(5 * cols, 3.2 * rows), layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, arch in zip(axes.flat, archs):
        mine = history[history["arch"] == arch]
        for ablation, line in mine.groupby("ablation"):
            line = line.sort_values("date")
            ax.plot(line["date"], 100 * line["mean"].astype(float), marker="o", markersize=3,
                    linewidth=2.5 if ablation == BASELINE else 0.8, label=ablation)
        ax.set_title(arch)
        ax.set_ylabel("test accuracy %")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        if len(mine):
            ax.legend(fontsize=6, ncol=2)
    for ax in axes.flat[len(archs):]:
        ax.axis("off")
    return fig
