"""The nightly job without a pipeline: the comparison rules, the files, the report, the preset switch,
the shared stores and the workflow files. The two-night pipeline test is tests/test_nightly_pipeline.py."""

from __future__ import annotations

import math
import subprocess
from datetime import datetime, timezone

import pandas as pd
import pytest
import yaml

from cifarbench.errors import ConfigError
from cifarbench.nightly.compare import SUMMARY, compare, sigma, summarize
from cifarbench.nightly.config import NightlyConfig
from cifarbench.nightly.worktree import _note_uncommitted, shared_uri, with_preset
from cifarbench.nightly.report import write_report
from cifarbench.nightly.store import append_history, cells_of, night, read_baseline, read_history
from project import ROOT

CFG = NightlyConfig(k=3.0, floor=0.05, max_slowdown=0.25)
CPU = "cpu / x86_64 / none"
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"
NIGHTLY_COMMAND = 'cifarbench nightly --preset "$PRESET"'  # the workflow's step; the pipeline test runs it


def cells(*rows) -> pd.DataFrame:
    """Summary rows from (cell, mean, std, n, images_per_s[, hardware[, diverged[, config]]]) tuples."""
    out = []
    for cell, mean, std, n, speed, *rest in rows:
        arch, ablation = cell.split("/")
        hardware, diverged, config = (rest + [CPU, 0, "c0"][len(rest):])[:3]
        out.append({"arch": arch, "ablation": ablation, "n": n, "mean": mean, "std": std, "diverged": diverged, "did_not_train": 0,
                    "images_per_s": speed, "hardware": hardware, "config": config})
    return pd.DataFrame(out, columns=SUMMARY)


def verdicts(comparison, column: str = "accuracy") -> dict[str, str]:
    return {f"{r.arch}/{r.ablation}": getattr(r, column) for r in comparison.cells.itertuples()}


def test_a_cell_whose_config_changed_is_shown_but_judges_nothing():
    base = cells(("a/x", 0.60, 0.005, 2, 100), ("a/y", 0.60, 0.005, 2, 100, CPU, 0, None))
    tonight = cells(("a/x", 0.40, 0.005, 2, 100, CPU, 0, "c1"), ("a/y", 0.40, 0.005, 2, 100))
    result = compare(tonight, base, CFG)
    assert verdicts(result) == {"a/x": "config changed", "a/y": "config changed"}  # edited; baseline without configs
    assert not result.failed and result.cells["delta"].tolist() == pytest.approx([-0.2, -0.2])


def test_seeds_that_did_not_train_are_never_averaged_and_fail_the_night_even_after_a_config_edit():
    runs = pd.DataFrame({
        "arch": ["a"] * 3, "ablation": ["x"] * 3, "seed": [0, 1, 2], "status": ["completed"] * 3,
        "metrics.test_acc": [0.6, 0.1, 0.1], "metrics.images_per_s": [100.0] * 3, "tags.trained": ["true", "false", "false"],
        "tags.config_hash": ["c1"] * 3,
    })  # fmt: skip
    tonight = summarize(runs, [("a", "x")])
    assert tonight.loc[0, ["n", "did_not_train"]].tolist() == [1, 2] and tonight.loc[0, "mean"] == pytest.approx(0.6)
    result = compare(tonight, cells(("a/x", 0.6, 0.01, 3, 100)), CFG)  # baseline config c0: an edit
    assert verdicts(result) == {"a/x": "did not train"} and result.failed
    assert "2 seed(s) did not train, baseline 0" in result.regressed_names()[0]


def test_sigma_is_the_standard_error_of_the_difference_with_a_pooled_sd():
    assert sigma(2, 0.02, 2, 0.02) == pytest.approx(0.02)  # s * sqrt(1/2 + 1/2)
    assert sigma(3, 0.01, 1, 0.0) == pytest.approx(math.sqrt(2 * 0.01**2 / 2 * (1 / 3 + 1)))
    assert sigma(1, 0.0, 1, 0.0) == 0.0  # no spread to pool: the floor decides


def test_a_drop_counts_only_beyond_k_sigma_and_the_floor():
    base = cells(("a/x", 0.60, 0.005, 2, 100), ("a/y", 0.60, 0.03, 2, 100), ("a/z", 0.60, 0.005, 2, 100))
    # a/x: sigma 0.005, 3 sigma 1.5 points < floor 5: a 4-point drop is noise, a 6-point drop is not.
    # a/y: sigma 0.03, 3 sigma 9 points > floor: an 8-point drop is still within the noise.
    tonight = cells(("a/x", 0.56, 0.005, 2, 100), ("a/y", 0.52, 0.03, 2, 100), ("a/z", 0.54, 0.005, 2, 100))
    result = compare(tonight, base, CFG)
    assert verdicts(result) == {"a/x": "steady", "a/y": "steady", "a/z": "regressed"}
    row = result.cells.set_index("ablation").loc["y"]
    assert row["threshold"] == pytest.approx(0.09) and row["delta"] == pytest.approx(-0.08)
    assert result.failed and [n.split(" ")[0] for n in result.regressed_names()] == ["a/z"]
    assert "-6.00 points" in result.regressed_names()[0]


def test_improvements_missing_new_and_diverged_cells_are_told_apart():
    base = cells(("a/up", 0.5, 0.0, 2, 100), ("a/gone", 0.5, 0.0, 2, 100), ("a/boom", 0.5, 0.0, 2, 100),
                 ("a/still", math.nan, 0.0, 0, 100, CPU, 2))
    tonight = cells(("a/up", 0.6, 0.0, 2, 100), ("a/gone", math.nan, 0.0, 0, math.nan),
                    ("a/boom", 0.5, 0.0, 1, 100, CPU, 1), ("a/still", math.nan, 0.0, 0, 100, CPU, 2),
                    ("a/fresh", 0.4, 0.0, 2, 100))
    result = compare(tonight, base, CFG)
    assert verdicts(result) == {"a/up": "improved", "a/gone": "missing", "a/boom": "diverged",
                                "a/still": "missing", "a/fresh": "new"}
    assert [n.split(" ")[0] for n in result.regressed_names()] == ["a/boom"]  # only newly diverged seeds fail


def test_same_numbers_twice_pass():
    night_ = cells(("a/x", 0.6, 0.02, 2, 100), ("b/x", 0.3, 0.0, 1, 50))
    result = compare(night_, night_, CFG)
    assert not result.failed and set(verdicts(result).values()) == {"steady"}
    assert set(verdicts(result, "throughput").values()) == {"steady"}


def test_throughput_is_a_ratio_on_the_same_hardware_only():
    base = cells(("a/x", 0.6, 0.0, 2, 1000), ("a/y", 0.6, 0.0, 2, 1000), ("a/z", 0.6, 0.0, 2, 1000),
                 ("a/w", 0.6, 0.0, 2, 1000, "cuda / x86_64"))
    tonight = cells(("a/x", 0.6, 0.0, 2, 700), ("a/y", 0.6, 0.0, 2, 850), ("a/z", 0.6, 0.0, 2, 1400),
                    ("a/w", 0.6, 0.0, 2, 10))
    result = compare(tonight, base, CFG)
    assert verdicts(result, "throughput") == {"a/x": "slower", "a/y": "steady", "a/z": "faster", "a/w": "not compared"}
    assert math.isnan(result.cells.set_index("ablation").loc["w", "ratio"])
    assert [n.split(" ")[0] for n in result.regressed_names()] == ["a/x"]


def test_summarize_runs_per_cell():
    runs = pd.DataFrame({
        "arch": ["a", "a", "a", "b"], "ablation": ["x", "x", "x", "x"], "seed": [0, 1, 2, 0],
        "status": ["completed", "early_stopped", "diverged", "completed"],
        "metrics.test_acc": [0.5, 0.7, 0.1, 0.4], "metrics.images_per_s": [100.0, 300.0, 200.0, 50.0],
        "tags.fast.device": ["cpu"] * 4, "tags.host_cpu": ["x86_64"] * 4, "tags.host_gpu": ["none"] * 4,
    })  # fmt: skip
    out = summarize(runs, [("a", "x"), ("b", "x"), ("c", "x")]).set_index("arch")
    assert out.loc["a", "n"] == 2 and out.loc["a", "mean"] == pytest.approx(0.6)
    assert out.loc["a", "std"] == pytest.approx(0.1414, abs=1e-4) and out.loc["a", "diverged"] == 1
    assert out.loc["a", "images_per_s"] == 200 and out.loc["a", "hardware"] == CPU
    assert out.loc["b", "std"] == 0.0 and out.loc["c", "n"] == 0 and math.isnan(out.loc["c", "mean"])
    assert summarize(pd.DataFrame(columns=["run_id"]), [("a", "x")])["n"].tolist() == [0]


def test_nights_round_trip_through_json_and_feed_the_report(tmp_path):
    tonight = cells(("lenet5/baseline", 0.6, 0.01, 2, 900), ("lenet5/flip", math.nan, 0.0, 0, math.nan))
    when = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)
    summary = night(tonight, preset="nightly", commit="abc123def456", date=when)
    path = append_history(tmp_path / "history", summary, {"failed": False})
    assert path.name == "20261127T020000Z-abc123def4.json"
    (tmp_path / "baseline.json").write_text(path.read_text())
    baseline = read_baseline(tmp_path / "baseline.json")
    assert baseline["commit"] == "abc123def456"
    pd.testing.assert_frame_equal(cells_of(baseline), tonight, check_dtype=False)
    assert read_baseline(tmp_path / "none.json") is None
    history = read_history(tmp_path / "history", "nightly")
    assert len(history) == 2 and read_history(tmp_path / "history", "smoke").empty
    comparison = compare(cells_of(summary), cells_of(baseline), CFG)
    write_report(tmp_path / "nightly.md", comparison, summary, baseline, history, CFG, pipeline_ok=True)
    md = (tmp_path / "nightly.md").read_text()
    assert "OK: nothing regressed" in md and "commit abc123def4 of 2026-11-27T02:00:00+00:00" in md
    assert "lenet5/baseline" in md and "![mean test accuracy per night](nightly-trend.png)" in md
    assert (tmp_path / "nightly-trend.png").read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in (tmp_path / "nightly.html").read_text()


def test_config_defaults_and_params_yaml_section():
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    NightlyConfig.model_validate(tree["nightly"])  # the project's section is valid (its values may be retuned)
    cfg = NightlyConfig()
    assert cfg.k == 3 and cfg.floor == 0.05 and cfg.baseline == "reports/nightly/baseline.json"
    with pytest.raises(Exception, match="flor"):
        NightlyConfig.model_validate({"flor": 0.1})


def test_with_preset_changes_the_top_level_value_only():
    text = "# top\npreset: default   # smoke | default\ndata:\n  preset: keep\n"
    assert with_preset(text, "nightly") == text.replace("preset: default", "preset: nightly", 1)
    with pytest.raises(ConfigError, match="preset"):
        with_preset("data: {}\n", "nightly")


def test_the_worktree_shares_the_users_stores_by_absolute_path(tmp_path):
    assert shared_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert shared_uri("optuna/studies.journal", tmp_path) == str(tmp_path / "optuna/studies.journal")
    for uri in ("sqlite:////abs/m.db", "/abs/studies.journal", "http://host:5000", "postgresql://u:p@h/db"):
        assert shared_uri(uri, tmp_path) == uri


def test_ci_runs_the_readme_test_command_on_pushes_and_pull_requests():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "push" in triggers and "pull_request" in triggers
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest" and "timeout-minutes" in job
    steps = job["steps"]
    assert [s["with"]["python-version"] for s in steps if "setup-python" in s.get("uses", "")] == ["3.11"]
    assert steps[-1]["run"] == "make test" and "    make test\n" in (ROOT / "README.md").read_text()


def test_workflow_runs_the_tested_command_on_a_schedule_one_at_a_time():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert triggers["schedule"][0]["cron"].split()[2:] == ["*", "*", "*"]  # every day
    assert triggers["workflow_dispatch"]["inputs"]["preset"]["default"] == "nightly"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    job = workflow["jobs"]["benchmark"]
    assert "timeout-minutes" in job and "NIGHTLY_RUNS_ON" in job["runs-on"]
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    assert steps["Nightly benchmark"]["run"] == NIGHTLY_COMMAND
    assert "make setup" in steps["Install (the README way)"]["run"]
    upload = steps["Upload reports"]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["with"]["path"] == "reports/"
    assert upload["if"] == "always()"
    assert "'nightly'" in job["env"]["PRESET"]


def test_the_uncommitted_note_names_each_changed_file_whole(tmp_path, capsys):
    """The nightly runs the last commit with the user's params.yaml; other uncommitted edits are named, whole
    (the first used to lose its first letter: `arams.yaml`)."""
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    for name in ("params.yaml", "dvc.yaml", "README.md"):
        (tmp_path / name).write_text("a\n")
    git("add", ".")
    git("commit", "-qm", "init")
    _note_uncommitted(tmp_path, "0" * 40)
    assert capsys.readouterr().err == ""
    for name in ("params.yaml", "dvc.yaml", "README.md"):
        (tmp_path / name).write_text("b\n")
    _note_uncommitted(tmp_path, "0" * 40)
    err = capsys.readouterr().err
    assert err.endswith("uncommitted changes to README.md, dvc.yaml are not part of it\n")
