"""`reports/nightly.md` and `.html`: the verdict, what moved and by how much against which baseline, every
cell, and a trend plot per architecture over the nights (a PNG beside the markdown, embedded in the HTML).
Rendered, and escaped, by the comparison report's renderer (cifarbench.report.render)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cifarbench.io import atomic_path
from cifarbench.nightly.compare import Comparison, cell_name
from cifarbench.nightly.config import NightlyConfig
from cifarbench.report import figures
from cifarbench.report.figures import png_bytes
from cifarbench.report.render import Block, Document, Image, Section, Strong, Table, to_html, to_markdown

COLUMNS = ["cell", "tonight %", "baseline %", "change (points)", "threshold (points)", "accuracy",
           "images/s", "ratio", "throughput"]


def write_report(path: Path | str, comparison: Comparison, tonight: dict, baseline: dict | None,
                 history: pd.DataFrame, cfg: NightlyConfig, pipeline_ok: bool) -> None:
    path = Path(path)
    png = png_bytes(figures.nightly_trend(history))
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
               else f"none; promote a night with: cifarbench nightly --update-baseline (writes {cfg.baseline})")
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
        ("missing", "Missing, diverged, not trained or new",
         cells[cells["accuracy"].isin(["missing", "diverged", "did not train", "new"])]),
        ("config-changed", "Not compared: config changed since the baseline (promote a night made under these params)",
         cells[cells["accuracy"] == "config changed"]),
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
