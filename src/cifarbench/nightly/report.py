"""`reports/nightly.md` and `.html`: the verdict, what moved and by how much against which baseline, every
cell, and a trend plot per architecture over the nights (a PNG beside the markdown, embedded in the HTML).
Rendered, and escaped, by the comparison report's renderer (cifarbench.report.render)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from cifarbench.io import atomic_path
from cifarbench.nightly.compare import Comparison, cell_name
from cifarbench.nightly.config import NightlyConfig
from cifarbench.report.render import Block, Document, Image, Section, Strong, Table, to_html, to_markdown

COLUMNS = ["cell", "tonight %", "baseline %", "change (points)", "threshold (points)", "accuracy",
           "images/s", "ratio", "throughput"]


def write_report(path: Path | str, comparison: Comparison, tonight: dict, baseline: dict | None,
                 history: pd.DataFrame, cfg: NightlyConfig, pipeline_ok: bool) -> None:
    path = Path(path)
    png = trend_png(history)
    plot_path = path.with_name(f"{path.stem}-trend.png")
    with atomic_path(plot_path) as tmp:
        tmp.write_bytes(png)
    trend = Section("trend", "Trend", blocks=[Image(plot_path.name, png, "mean test accuracy per night")])
    doc = Document(f"Nightly benchmark: preset {tonight['preset']}",
                   _header(comparison, tonight, baseline, cfg, pipeline_ok), [*_sections(comparison), trend])
    with atomic_path(path) as tmp:
        tmp.write_text(to_markdown(doc, images=""))  # the plot lies beside the Markdown
    with atomic_path(path.with_suffix(".html")) as tmp:
        tmp.write_text(to_html(doc))


def _header(comparison: Comparison, tonight: dict, baseline: dict | None, cfg: NightlyConfig,
            pipeline_ok: bool) -> list[Block]:
    gating = comparison.regressed_names()
    verdict = (f"FAILED: {len(gating)} cell(s): {', '.join(gating)}" if gating
               else "OK: nothing regressed" if baseline else "no baseline yet: nothing compared")
    against = (f"commit {baseline['commit'][:10]} of {baseline['date']}" if baseline
               else f"none; promote a night with `cifarbench nightly --update-baseline` (writes {cfg.baseline})")
    lines = [Strong(verdict), f"Tonight: commit {tonight['commit'][:10]} at {tonight['date']}.",
             f"Baseline: {against}.",
             f"A cell regresses when its mean test accuracy falls by more than max({cfg.k:g} sigma, "
             f"{100 * cfg.floor:g} points), sigma the standard error of the difference from the pooled seed sd; "
             f"throughput regresses below {1 - cfg.max_slowdown:.2f} x the baseline, compared on the same "
             f"recorded hardware only."]
    if not pipeline_ok:
        lines.insert(1, "The pipeline failed tonight: cells it did not finish are compared from earlier runs "
                        "or listed as missing.")
    return lines


def _sections(comparison: Comparison) -> list[Section]:
    """A table of cells per section ("none" when empty); the sections after "Regressed" only when not empty."""
    cells = comparison.cells
    pick = [
        ("regressed", "Regressed", comparison.gating()),
        ("improved", "Improved", cells[(cells["accuracy"] == "improved") | (cells["throughput"] == "faster")]),
        ("missing", "Missing, diverged or new", cells[cells["accuracy"].isin(["missing", "diverged", "new"])]),
        ("other-hardware", "Throughput not compared (other hardware)", cells[cells["throughput"] == "not compared"]),
        ("all", "All cells", cells),
    ]
    return [Section(anchor, title, blocks=[Table(_table(frame))] if len(frame) else ["none"])
            for anchor, title, frame in pick if len(frame) or anchor == "regressed"]


def _table(cells: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([_row(r) for _, r in cells.iterrows()], columns=COLUMNS).set_index("cell")


def _row(r) -> list[str]:
    hardware = "" if r["throughput"] != "not compared" else f" ({r['hardware']} vs {r['hardware_base']})"
    return [cell_name(r), _acc(r["mean"], r["std"], r["n"]), _acc(r["mean_base"], r["std_base"], r["n_base"]),
            _num(100 * r["delta"], "+.2f"), _num(100 * r["threshold"], ".2f"), r["accuracy"],
            _num(r["images_per_s"], ",.0f"), _num(r["ratio"], ".2f"), r["throughput"] + hardware]


def _acc(mean: float, std: float, n: int) -> str:
    return "–" if not n or math.isnan(mean) else f"{100 * mean:.2f} ± {100 * std:.2f} (n={n})"


def _num(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def trend_png(history: pd.DataFrame) -> bytes:
    """Mean test accuracy per night, one panel per architecture, one line per ablation (baseline bold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted(history["arch"].unique()) or ["(no nights yet)"]
    cols = min(3, len(archs))
    rows = math.ceil(len(archs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, arch in zip(axes.flat, archs):
        mine = history[history["arch"] == arch]
        for ablation, line in mine.groupby("ablation"):
            line = line.sort_values("date")
            ax.plot(line["date"], 100 * line["mean"].astype(float), marker="o", markersize=3,
                    linewidth=2.5 if ablation == "baseline" else 0.8, label=ablation)
        ax.set_title(arch)
        ax.set_ylabel("test accuracy %")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        if len(mine):
            ax.legend(fontsize=6, ncol=2)
    for ax in axes.flat[len(archs):]:
        ax.axis("off")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()
