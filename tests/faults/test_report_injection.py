"""Probes: what the reports (comparison and nightly) print from outside (the tracking URI, run names, tags,
ablation descriptions, cell names) can neither leak a password nor inject HTML or Markdown.

Setup: report pieces built from plain frames and strings, rendered by the real renderers (no MLflow).
Required outcome: the password never appears; `<script>` appears only as the report's own one script;
every Markdown table keeps its rows and columns; hostile text stays one inert line.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cifarbench.nightly.compare import SUMMARY, compare
from cifarbench.nightly.config import NightlyConfig
from cifarbench.nightly.report import write_report
from cifarbench.report.render import Bullets, Document, Section, Table, to_html, to_markdown
from cifarbench.redact import mask_credentials
from cifarbench.report.sections import Inputs, provenance_section

pytestmark = pytest.mark.faults

HOSTILE = "<script>alert('x')</script> | a $x$ `rm` & \n# heading\n- item"


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://bench:s3cret@db.example:5432/mlflow", "postgresql://bench:***@db.example:5432/mlflow"),
    ("postgresql+psycopg2://bench:p%40ss@db/mlflow", "postgresql+psycopg2://bench:***@db/mlflow"),
    ("https://alice:s3cret@mlflow.example/", "https://alice:***@mlflow.example/"),
    ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),
    ("http://mlflow.example:5000", "http://mlflow.example:5000"),
])
def test_tracking_uri_is_shown_without_its_password(uri, shown):
    assert mask_credentials(uri) == shown


def inputs(runs: pd.DataFrame, left_out: pd.DataFrame, store: str) -> Inputs:
    empty = pd.DataFrame()
    return Inputs(preset="smoke", archs=[], ablations=[], expected=empty, runs=runs, left_out=left_out,
                  histories=empty, studies=empty, tuned={}, provenance={"MLflow store / experiment": store})


def rendered(section: Section) -> tuple[str, str]:
    doc = Document("report", ["intro"], [section])
    return to_markdown(doc), to_html(doc)


def test_provenance_hides_the_password_and_escapes_tags_and_run_names():
    uri = "postgresql://bench:s3cret@db.example/mlflow"
    runs = pd.DataFrame({"tags.git_commit": [HOSTILE], "tags.host_cpu": ["x86|64\nrow"]})
    left_out = pd.DataFrame({"run_name": [HOSTILE, "lenet5/flip/seed0"]})
    md, page = rendered(provenance_section(inputs(runs, left_out, f"{mask_credentials(uri)} / cifarbench")))
    for text in (md, page):
        assert "s3cret" not in text and "bench:***@db.example" in text
    assert_inert(md, page)


def assert_inert(md: str, page: str) -> None:
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert page.count("<script>") == 1  # the report's own (images-loaded flag), nothing from the runs
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert not re.search(r"^#+ heading|^- item|(?<!\\)`rm|(?<!\\)\$x", md, flags=re.M)


def table_shape(md: str) -> list[int]:
    """Cells per row of every pipe table (unescaped pipes only)."""
    return [len(re.split(r"(?<!\\)\|", line)) - 2 for line in md.splitlines() if line.startswith("|")]


def test_hostile_cells_keep_the_markdown_table_whole():
    frame = pd.DataFrame({"value": [HOSTILE, "ok"], "n": ["1", "2"]},
                         index=pd.Index(["a|b", "c\nd"], name="run"))
    md, page = rendered(Section("t", "title", "guide", [Table(frame)]))
    shape = table_shape(md)
    assert len(shape) == 4 and set(shape) == {3}  # header, rule, two rows; three columns each
    assert_inert(md, page)


def test_ablation_descriptions_and_run_names_in_bullets_and_paragraphs_stay_text():
    about = f"no_l2: {HOSTILE}"
    md, page = rendered(Section("s", "2. Ablation matrix", "guide", [HOSTILE, Bullets([about, "1. not a list"])]))
    assert "- no_l2: &lt;script&gt;" in md and "- 1\\. not a list" in md
    assert_inert(md, page)


def test_the_nightly_report_keeps_hostile_cell_names_inert(tmp_path):
    """The nightly report goes through the same renderer: a cell name in the verdict, the tables and the
    plot's legend stays text, and its tables keep their shape."""
    def cells(mean: float) -> pd.DataFrame:
        rows = [(arch, ablation, mean) for arch, ablation in (("lenet5", "baseline"), ("lenet5", HOSTILE))]
        return pd.DataFrame([{"arch": a, "ablation": b, "n": 2, "mean": m, "std": 0.01, "diverged": 0,
                              "images_per_s": 100.0, "hardware": "cpu", "config": "c0ffee", "did_not_train": 0} for a, b, m in rows],
                            columns=SUMMARY)

    cfg = NightlyConfig(k=3.0, floor=0.05, max_slowdown=0.25)
    tonight = {"preset": "nightly", "commit": "abc123def456", "date": "2026-11-27T02:00:00+00:00"}
    baseline = {"commit": "0123456789ab", "date": "2026-11-26T02:00:00+00:00"}
    history = pd.DataFrame({"arch": ["lenet5"], "ablation": [HOSTILE], "date": ["2026-11-27"], "mean": [0.3]})
    write_report(tmp_path / "nightly.md", compare(cells(0.3), cells(0.6), cfg), tonight, baseline, history, cfg,
                 pipeline_ok=True)
    md, page = (tmp_path / "nightly.md").read_text(), (tmp_path / "nightly.html").read_text()
    verdict = next(line for line in md.splitlines() if line.startswith("**FAILED: 2 cell(s): "))
    assert "lenet5/&lt;script&gt;" in verdict and verdict.endswith("**")  # one bold line, escaped
    assert set(table_shape(md)) == {9}  # every row of every table: nine columns
    assert_inert(md, page)
