"""Provenance of a run and of the report: the pipeline's own outputs written into the repository do not make
the tree "dirty" (the per-cell results and the report are tracked by git), anything else does; the report
names a store inside the project by its relative path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cifarbench.report.build import shown_store
from cifarbench.tracking.tags import GIT_DIRTY, provenance


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    for name in ("params.yaml", "dvc.lock", "runs/default/metrics/lenet5/baseline.json", "reports/comparison.md",
                 "src/code.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "start")
    monkeypatch.chdir(tmp_path / "src")  # from a subfolder too: the paths are the repository's
    return tmp_path


def test_the_pipelines_own_outputs_leave_the_tree_clean(repo):
    assert provenance()[GIT_DIRTY] == "false"
    for name in ("dvc.lock", "runs/default/metrics/lenet5/baseline.json", "reports/comparison.md"):
        (repo / name).write_text("1\n")
    (repo / "runs/default/metrics/lenet5/new.json").write_text("1\n")  # untracked: never counted
    assert provenance()[GIT_DIRTY] == "false"


@pytest.mark.parametrize("name", ["params.yaml", "src/code.py"])
def test_a_changed_param_or_source_file_is_dirty(repo, name):
    (repo / name).write_text("1\n")
    assert provenance()[GIT_DIRTY] == "true"


def test_the_report_shows_a_store_in_the_project_by_its_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_store(f"sqlite:///{tmp_path}/mlflow.db") == "sqlite:///mlflow.db"
    assert shown_store("sqlite:////elsewhere/mlflow.db") == "sqlite:////elsewhere/mlflow.db"
    assert shown_store("http://user:secret@host:5000") == "http://user:***@host:5000"
