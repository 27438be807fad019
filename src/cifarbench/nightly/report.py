"""`reports/nightly.md` and `.html`: the verdict, what moved and by how much against which baseline, every
cell, and a trend plot per architecture over the nights (a PNG beside the markdown, embedded in the HTML)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import pandas as pd

from cifarbench.io import atomic_path
from cifarbench.nightly.compare import Comparison, cell_name
from cifarbench.nightly.config import NightlyConfig

COLUMNS = ["cell", "tonight %", "baseline %", "change (points)", "threshold (points)", "accuracy",
           "images/s", "ratio", "throughput"]


def write_report(path: Path | str, comparison: Comparison, tonight: dict, baseline: dict | None,
                 history: pd.DataFrame, cfg: NightlyConfig, pipeline_ok: bool) -> None:
    path = Path(path)
    png = trend_png(history)
    plot_path = path.with_name(f"{path.stem}-trend.png")
    with atomic_path(plot_path) as tmp:
        tmp.write_bytes(png)
    header = _header(comparison, tonight, baseline, cfg, pipeline_ok)
    sections = _sections(comparison)
    md = [f"# Nightly benchmark: preset `{tonight['preset']}`", "", *header, ""]
    body = [f"<h1>Nightly benchmark: preset <code>{html.escape(tonight['preset'])}</code></h1>",
            *(f"<p>{html.escape(line)}</p>" for line in header)]
    for title, rows in sections:
        md += [f"## {title}", "", *_markdown_table(rows), ""]
        body += [f"<h2>{html.escape(title)}</h2>", _html_table(rows)]
    md += ["## Trend", "", f"![mean test accuracy per night]({plot_path.name})", ""]
    body += ["<h2>Trend</h2>", f'<img alt="trend" src="data:image/png;base64,{base64.b64encode(png).decode()}">']
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(md))
    with atomic_path(path.with_suffix(".html")) as tmp:
        tmp.write_text("<!doctype html><meta charset='utf-8'><title>cifarbench nightly</title>"
                       "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
                       + "\n".join(body))


def _header(comparison: Comparison, tonight: dict, baseline: dict | None, cfg: NightlyConfig,
            pipeline_ok: bool) -> list[str]:
    gating = comparison.regressed_names()
    verdict = (f"FAILED: {len(gating)} cell(s): {', '.join(gating)}" if gating
               else "OK: nothing regressed" if baseline else "no baseline yet: nothing compared")
    against = (f"commit {baseline['commit'][:10]} of {baseline['date']}" if baseline
               else f"none; promote a night with `cifarbench nightly --update-baseline` (writes {cfg.baseline})")
    lines = [f"**{verdict}**", f"Tonight: commit {tonight['commit'][:10]} at {tonight['date']}.",
             f"Baseline: {against}.",
             f"A cell regresses when its mean test accuracy falls by more than max({cfg.k:g} sigma, "
             f"{100 * cfg.floor:g} points), sigma the standard error of the difference from the pooled seed sd; "
             f"throughput regresses below {1 - cfg.max_slowdown:.2f} x the baseline, compared on the same "
             f"recorded hardware only."]
    if not pipeline_ok:
        lines.insert(1, "The pipeline failed tonight: cells it did not finish are compared from earlier runs "
                        "or listed as missing.")
    return lines


def _sections(comparison: Comparison) -> list[tuple[str, list[list[str]]]]:
    cells = comparison.cells
    pick = {
        "Regressed": comparison.gating(),
        "Improved": cells[(cells["accuracy"] == "improved") | (cells["throughput"] == "faster")],
        "Missing, diverged or new": cells[cells["accuracy"].isin(["missing", "diverged", "new"])],
        "Throughput not compared (other hardware)": cells[cells["throughput"] == "not compared"],
        "All cells": cells,
    }
    return [(title, [COLUMNS, *(_row(r) for _, r in frame.iterrows())]) for title, frame in pick.items()
            if not frame.empty or title == "Regressed"]


def _row(r) -> list[str]:
    hardware = "" if r["throughput"] != "not compared" else f" ({r['hardware']} vs {r['hardware_base']})"
    return [cell_name(r), _acc(r["mean"], r["std"], r["n"]), _acc(r["mean_base"], r["std_base"], r["n_base"]),
            _num(100 * r["delta"], "+.2f"), _num(100 * r["threshold"], ".2f"), r["accuracy"],
            _num(r["images_per_s"], ",.0f"), _num(r["ratio"], ".2f"), r["throughput"] + hardware]


def _acc(mean: float, std: float, n: int) -> str:
    return "–" if not n or math.isnan(mean) else f"{100 * mean:.2f} ± {100 * std:.2f} (n={n})"


def _num(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def _markdown_table(rows: list[list[str]]) -> list[str]:
    if len(rows) == 1:
        return ["none"]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return lines + ["| " + " | ".join(row) + " |" for row in rows[1:]]


def _html_table(rows: list[list[str]]) -> str:
    if len(rows) == 1:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


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
