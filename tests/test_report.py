"""The comparison report, built by the `report` stage of a real `dvc repro` (smoke preset, 2 seeds so the
paired intervals exist), checked against the MLflow runs it came from and opened in headless Chromium;
and the MLflow UI (a real `mlflow server`) showing the same runs.

Chromium: tests/install_browser.sh (run by `make test`) installs it where apt and root or sudo allow;
the browser tests are skipped where none is on PATH.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from scipy import stats

from cifarbench.commands import report as report_command
from cifarbench.config import load_params
from cifarbench.params import parse
from cifarbench.report import load_histories, load_runs
from cifarbench.report.build import gather, report_stage
from project import Project, ROOT, architecture, mlflow_server

pytestmark = pytest.mark.slow

# Two quick architectures (a CNN, a recurrent net: no_bn is not applicable to either, and the LSTM's baseline
# already augments with flip only) under one ablation of each group, 2 seeds: 8 cells (5 trained) + 2 tuning
# studies in about a minute on 2 cores.
ARCHS = ["lenet5", "lstm"]
ABLATIONS = ["baseline", "no_reg", "no_bn", "flip"]
SEEDS = [0, 1]
NOT_APPLICABLE = {("lenet5", "no_bn"), ("lstm", "no_bn"), ("lstm", "flip")}
RUNS = (len(ARCHS) * len(ABLATIONS) - len(NOT_APPLICABLE)) * len(SEEDS)
TECHNIQUES = {"no_reg": "all regularization", "no_bn": "batch norm", "flip": "flip"}  # params.yaml `buys`
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def report_project(tmp_path_factory, cifar_archive) -> Project:
    archive, md5 = cifar_archive
    params = load_params(ROOT / "params.yaml")
    smoke = params["presets"]["smoke"]
    # fast: false avoids a known oneDNN hang of channels_last on very narrow convolutions on these CPUs.
    smoke = {**smoke, "seeds": SEEDS, "train": {**smoke["train"], "fast": False}}
    project = Project.create(
        tmp_path_factory.mktemp("report"), preset="smoke", data__url=str(archive), data__md5=md5,
        data__val_size=100, presets__smoke=smoke,
        architectures={a: architecture(params, a) for a in ARCHS},
        ablations={a: params["ablations"][a] for a in ABLATIONS},
    )  # fmt: skip
    started = time.perf_counter()
    result = project.repro()
    print(f"report project dvc repro: {time.perf_counter() - started:.1f} s")
    assert "Running stage 'report'" in result.stdout
    return project


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's path; the test is skipped where there is none (`make test` installs it where it can)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium or chromium-browser on PATH: run tests/install_browser.sh (apt-get, as root or "
                    "with sudo) or install Chromium to run the browser tests")
    return path


def browse(chromium: str, url: str, *flags: str) -> str:
    """Run headless Chromium on `url` in a fresh profile; returns its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, url],
                              capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def assert_not_blank(png: Path) -> None:
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.std() > 10, f"{png} looks blank (pixel sd {pixels.std():.1f})"
    assert (pixels < 200).mean() > 0.02, f"{png}: under 2% of the pixels are not near-white"


def mlflow_runs(project: Project) -> dict[str, object]:
    """The current training runs, straight from MLflow (not through the report's loader)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{project.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifarbench")
    runs = client.search_runs([experiment.experiment_id], "tags.`cifarbench.current` = 'true'", max_results=1000)
    return {r.info.run_name: r for r in runs if "cifarbench.kind" not in r.data.tags}


def markdown_tables(text: str) -> dict[str, list[list[list[str]]]]:
    """Section heading -> its pipe tables, each a list of rows of cell strings (header first)."""
    out: dict[str, list] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, body = section.split("\n", 1)
        blocks = re.findall(r"(?:^\|.*\|\n)+", body, flags=re.M)
        out[heading.strip()] = [[[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()
                                 if not re.fullmatch(r"\|[-:| ]+\|", line)] for block in blocks]
    return out


def as_frame(table: list[list[str]]) -> dict[str, dict[str, str]]:
    header, *rows = table
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


def test_report_outputs_and_dvc_metrics(report_project):
    reports = report_project.path / "reports"
    figures = sorted(p.name for p in (reports / "figures").glob("*.png"))
    assert figures == sorted(["ablation_matrix.png", "confusion.png", "forest.png", "pareto.png", *(f"curves_{a}.png" for a in ARCHS)])
    shown = json.loads(report_project.run("dvc", "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert metrics["runs"] == {"planned": RUNS, "found": RUNS, "missing": 0, "left_out": 0}


def test_every_table_has_a_row_per_architecture_and_numbers_equal_mlflow(report_project):
    runs = mlflow_runs(report_project)
    acc = {(r.data.tags["arch"], r.data.tags["ablation"], int(r.data.tags["seed"])): r.data.metrics["test_acc"]
           for r in runs.values()}
    assert len(acc) == RUNS
    trained = {key: runs[f"{key[0]}/{key[1]}/seed{key[2]}"].data.tags["trained"] == "true" for key in acc}
    text = (report_project.path / "reports" / "comparison.md").read_text()
    tables = markdown_tables(text)
    metrics = json.loads((report_project.path / "reports" / "metrics.json").read_text())

    board = as_frame(tables["1. Leaderboard: baselines"][0])
    bought = as_frame(tables["2. What each technique buys"][0])
    matrix = as_frame(tables["2. What each technique buys"][1])  # the raw table: each ablation minus baseline
    ended = as_frame(tables["4. Learning curves"][0])
    assert set(board) == set(ARCHS) and list(matrix) == ARCHS and list(ended) == ARCHS
    columns = [b for b in ABLATIONS if b != "no_bn"]  # no_bn applies to neither lenet5 nor lstm: no column
    assert list(matrix["lenet5"]) == columns and list(ended["lenet5"]) == columns
    for heading in ("5. Accuracy vs cost", "6. Tuning"):
        assert list(as_frame(tables[heading][0])) == ARCHS, heading
    assert set(as_frame(tables["3. What each technique buys, over architectures"][0])) == \
        {t for b, t in TECHNIQUES.items() if b != "no_bn"}  # batch norm: no architecture here runs it

    for arch in ARCHS:  # a baseline run that did not train is left out of the leaderboard
        base = np.array([acc[(arch, "baseline", s)] for s in SEEDS if trained[(arch, "baseline", s)]])
        shown = (f"{100 * base.mean():.2f}" + (f" ± {100 * base.std(ddof=1):.2f}" if len(base) > 1 else "")
                 if len(base) else "did not train")
        assert board[arch]["test acc % (mean ± sd)"] == shown and board[arch]["seeds"] == str(len(base))
        assert matrix[arch]["baseline"] == f"{shown} (n={len(base)})"
        assert metrics["baseline_test_acc"][arch] == (pytest.approx(base.mean(), rel=1e-12) if len(base) else None)
        params = runs[f"{arch}/baseline/seed0"].data.metrics["params"]
        assert board[arch]["params"] == f"{params:,.0f}"
        applicable = [b for b in ABLATIONS[1:] if (arch, b) not in NOT_APPLICABLE]
        deltas = {b: np.array([acc[(arch, b, s)] - acc[(arch, "baseline", s)] for s in SEEDS]) for b in applicable}
        for ablation in ABLATIONS[1:]:
            if ablation not in columns:  # no architecture runs it: no column, not a column of n/a
                assert ablation not in matrix[arch] and ablation not in ended[arch]
                continue
            if (arch, ablation) in NOT_APPLICABLE:
                assert matrix[arch][ablation] == "n/a" and ended[arch][ablation] == "n/a"
                continue
            assert_cell(matrix[arch][ablation], deltas[ablation], _all_trained(trained, arch, ablation, "baseline"))
            assert ended[arch][ablation] == "2, 2 / 2"
        # What all regularization buys = baseline - no_reg; batch norm has a cell the plan skips (n/a), flip is
        # flip - aug_none, and aug_none is not an ablation of this trimmed plan.
        assert_cell(bought[arch][TECHNIQUES["no_reg"]], -deltas["no_reg"],
                    _all_trained(trained, arch, "baseline", "no_reg"))
        assert TECHNIQUES["no_bn"] not in bought[arch] and bought[arch][TECHNIQUES["flip"]] == "not planned"
    gains = [np.mean([acc[(a, "baseline", s)] - acc[(a, "no_reg", s)] for s in SEEDS]) for a in ARCHS
             if _all_trained(trained, a, "baseline", "no_reg")]
    if gains:
        assert metrics["mean_gain"]["all regularization"] == pytest.approx(np.mean(gains), abs=1e-12)
    # batch norm: no architecture here runs it (no entry); flip: run, but its `without` (aug_none) is not
    assert "batch norm" not in metrics["mean_gain"] and metrics["mean_gain"]["flip"] is None
    assert metrics["runs_did_not_train"] == sum(not t for t in trained.values())

    # how far each network fits: the last table of section 2, each figure the mean of MLflow's train_acc and
    # best_val_acc over the cell's runs that trained (no_reg and the baseline ran; aug_none is not planned)
    fit = as_frame(tables["2. What each technique buys"][-1])
    assert set(fit) == set(ARCHS)
    for arch in ARCHS:
        for cell in ("baseline", "no_reg"):
            keep = [runs[f"{arch}/{cell}/seed{s}"].data.metrics for s in SEEDS if trained[(arch, cell, s)]]
            for measure, name in (("train_acc", "train"), ("best_val_acc", "val")):
                shown = f"{100 * np.mean([m[measure] for m in keep]):.2f}" if keep else "–"
                assert fit[arch][f"{cell} {name}"] == shown, (arch, cell, measure)


def _all_trained(trained: dict, arch: str, *cells: str) -> bool:
    return all(trained[(arch, cell, s)] for cell in cells for s in SEEDS)


def assert_cell(cell: str, d: np.ndarray, both_trained: bool) -> None:
    """A matrix cell as the report prints it: mean [its own 95% paired t interval, df n - 1]mark (n), where
    the mark is * (survives Holm over the table), ° (only the uncorrected interval excludes 0) or nothing;
    with 2 seeds, one run that did not train makes its cell "did not train"."""
    if not both_trained:
        assert cell == "did not train"
        return
    if np.ptp(d) <= 1e-9:  # equal differences: no interval
        prefix, raw = f"{100 * d.mean():+.2f}", False
    else:
        half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
        lo, hi = d.mean() - half, d.mean() + half
        prefix, raw = f"{100 * d.mean():+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]", lo > 0 or hi < 0
    assert cell.startswith(prefix) and cell.endswith(" (n=2)"), (cell, prefix)
    mark = cell[len(prefix):-len(" (n=2)")]
    assert mark in ("", "*", "°") and (mark != "") == raw, cell


def test_tuning_table_shows_each_study(report_project):
    client = MlflowClient(tracking_uri=f"sqlite:///{report_project.path / 'mlflow.db'}")
    studies = client.search_runs([client.get_experiment_by_name("cifarbench").experiment_id],
                                 "tags.`cifarbench.kind` = 'tune' and tags.`cifarbench.current` = 'true'")
    assert {s.data.tags["arch"] for s in studies} == set(ARCHS)
    table = as_frame(markdown_tables((report_project.path / "reports" / "comparison.md").read_text())["6. Tuning"][0])
    for study in studies:
        row = table[study.data.tags["arch"]]
        assert row["study"] == "found" and row["complete"] == f"{study.data.metrics['trials_complete']:.0f}"
        if "best.lr" in study.data.params:
            assert row["best lr"] == f"{float(study.data.params['best.lr']):.3g}"


def test_load_runs_is_one_row_per_current_training_run(report_project):
    uri = f"sqlite:///{report_project.path / 'mlflow.db'}"
    runs = load_runs(uri, "cifarbench", "smoke")
    assert sorted(runs["run_name"]) == sorted(mlflow_runs(report_project))  # no tuning studies or trials
    assert runs["seed"].dtype.name == "Int64" and set(runs["status"]) == {"completed"}
    assert runs["metrics.test_acc"].between(0, 1).all() and "params.train.optimizer.lr" in runs
    assert load_runs(uri, "cifarbench", "default").empty and load_runs(uri, "no-such-experiment", "smoke").empty
    history = load_histories(uri, runs)
    assert len(history) == 2 * len(runs) and sorted(history["epoch"].unique()) == [1, 2]
    assert history[["train_acc", "val_acc", "train_loss", "val_loss"]].notna().all().all()


def test_missing_cells_and_foreign_runs_never_leak(report_project, tmp_path, monkeypatch):
    """A cell the plan has but nobody ran shows as missing; current runs of another preset, of a config that
    is no longer the plan's, or replaced by a rerun are not counted."""
    db = tmp_path / "mlflow.db"
    shutil.copy(report_project.path / "mlflow.db", db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("cifarbench").experiment_id
    real = client.get_run(mlflow_runs(report_project)["lenet5/flip/seed0"].info.run_id)
    for preset, config_hash, current in (("default", real.data.tags["config_hash"], "true"),
                                         ("smoke", "0123456789ab", "true"), ("smoke", real.data.tags["config_hash"], "false")):
        fake = client.create_run(experiment, run_name="lenet5/flip/seed0", tags={
            **real.data.tags, "preset": preset, "config_hash": config_hash, "cifarbench.current": current})
        client.log_metric(fake.info.run_id, "test_acc", 0.999)
        client.set_terminated(fake.info.run_id)
    monkeypatch.chdir(report_project.path)
    tree = load_params()
    tree["ablations"]["rotate"] = {"group": "augmentation", "about": "not run yet", "train": {"augment": {"policy": "rotate"}}}
    params = parse(tree)
    metrics = report_stage(params.plan, params.tracking, out=tmp_path / "reports")
    rotate = len(ARCHS) * len(SEEDS)
    assert metrics["runs"] == {"planned": RUNS + rotate, "found": RUNS, "missing": rotate, "left_out": 1}
    matrix = as_frame(markdown_tables((tmp_path / "reports" / "comparison.md").read_text())["2. What each technique buys"][1])  # the raw table
    assert [matrix[a]["rotate"] for a in ARCHS] == ["missing", "missing"]
    assert "99.90" not in (tmp_path / "reports" / "comparison.md").read_text()
    assert len(gather(params.plan, params.tracking).runs) == RUNS


def test_cli_report_says_how_to_view_it(report_project, monkeypatch, capsys):
    monkeypatch.chdir(report_project.path)
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or False)  # no browser here
    report_command.run(type("Args", (), {"params": Path("params.yaml"), "preset": None, "open": True})())
    assert opened == [(report_project.path / "reports" / "comparison.html").resolve().as_uri()]
    assert f"open {opened[0]} in a browser" in capsys.readouterr().out


def test_html_is_self_contained_and_renders_in_chromium(chromium, report_project, tmp_path):
    page = report_project.path / "reports" / "comparison.html"
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)|<link|@import|url\(""", html)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == len(list((report_project.path / "reports" / "figures").glob("*.png")))
    assert all(src.startswith("data:image/png;base64,") for src in images)
    dom = browse(chromium, page.as_uri(), "--virtual-time-budget=5000", "--dump-dom")
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-loaded="true"' in body and f'data-images="{len(images)}"' in body
    shot = tmp_path / "report.png"
    browse(chromium, page.as_uri(), f"--screenshot={shot}", "--window-size=1400,4000")
    assert_not_blank(shot)


@pytest.fixture
def mlflow_ui(report_project, tmp_path):
    """`mlflow server` on 127.0.0.1 over a copy of the pipeline's store; yields its URL."""
    shutil.copy(report_project.path / "mlflow.db", tmp_path / "mlflow.db")
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}") as url:
        yield url


def test_mlflow_ui_lists_and_compares_the_pipeline_runs(chromium, report_project, mlflow_ui):
    runs = mlflow_runs(report_project)
    experiment = next(iter(runs.values())).info.experiment_id
    dom = browse(chromium, f"{mlflow_ui}/#/experiments/{experiment}/runs", "--virtual-time-budget=15000", "--dump-dom")
    assert {name for name in runs if name in dom} == set(runs)
    # The compare view (parameters, metrics, parallel coordinates) of one architecture's runs.
    compared = {name: r.info.run_id for name, r in runs.items() if name.startswith("lenet5/")}
    compare = (f"{mlflow_ui}/#/compare-runs?runs={urllib.parse.quote(json.dumps(list(compared.values())))}"
               f"&experiments={urllib.parse.quote(json.dumps([experiment]))}")
    dom = browse(chromium, compare, "--virtual-time-budget=15000", "--dump-dom")
    assert "Parallel Coordinates" in dom and all(name in dom for name in compared)
    assert "train.augment.policy" in dom and "test_acc" in dom
