"""Fault probes of `cifarbench nightly`: killed at each of its steps, stopped twice, run twice at once, and
fed broken history and baseline files. Required every time: the user's params.yaml and dvc.lock keep their
bytes, and a plain rerun finishes.

The pipeline the nightly runs here is a stand-in: one `train` stage that records the preset it sees and, when
PROBE_SLEEP is set, waits, so a probe can stop the nightly while its pipeline runs. What is probed is the
nightly around the pipeline, not training (tests/test_nightly_pipeline.py runs the real one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from project import BIN, Project

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # every probe runs git, DVC and MLflow: seconds each

CHILD = Path(__file__).with_name("nightly_child.py")
STAGE = '''import os, pathlib, sys, time
out = pathlib.Path("out"); out.mkdir(exist_ok=True)
(out / "preset.txt").write_text([l for l in open("params.yaml") if l.startswith("preset:")][0])
(out / "pid").write_text(str(os.getpid()))
if os.environ.get("PROBE_SLEEP"):
    pathlib.Path(os.environ["PROBE_STARTED"]).write_text(str(os.getpid()))
    time.sleep(float(os.environ["PROBE_SLEEP"]))
'''
DVC_YAML = "stages:\n  train:\n    cmd: python stage.py\n    deps: [stage.py]\n    params: [preset]\n    outs: [out]\n"
USER_LOCK = "schema: '2.0'\nstages: {}\n"  # the user's own pipeline state, as far as these probes care


@pytest.fixture
def project(tmp_path) -> Project:
    """A committed git + DVC project with the real params.yaml (preset default) and the stand-in pipeline;
    params.yaml then edited and left uncommitted, as a user at work has it."""
    (tmp_path / "repo").mkdir()
    project = Project.create(tmp_path / "repo")
    (project.path / "dvc.yaml").write_text(DVC_YAML)
    (project.path / "stage.py").write_text(STAGE)
    project.git("add", "-A")
    project.git("commit", "-qm", "stand-in pipeline")
    project.set_params(data__val_size=123)  # an uncommitted edit the nightly must carry over
    (project.path / "dvc.lock").write_text(USER_LOCK)
    return project


def user_files(project: Project) -> dict[str, bytes]:
    return {name: (project.path / name).read_bytes() for name in ("params.yaml", "dvc.lock")}


def start(project: Project, *cmd: str, **env) -> subprocess.Popen:
    """The nightly in its own process group, as a shell or CI starts a job."""
    return subprocess.Popen(cmd or (str(BIN / "cifarbench"), "nightly"), cwd=project.path, env=project.env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def start_sleeping(project: Project, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A nightly whose pipeline is running; returns it and its stage's pid."""
    started = tmp_path / "stage-started"
    nightly = start(project, PROBE_SLEEP="120", PROBE_STARTED=str(started))
    deadline = time.monotonic() + 180
    while not started.exists():
        assert nightly.poll() is None, nightly.communicate()
        assert time.monotonic() < deadline, "the stand-in stage did not start in 180 s"
        time.sleep(0.2)
    return nightly, int(started.read_text())


def rerun_finishes(project: Project) -> None:
    rerun = project.run(str(BIN / "cifarbench"), "nightly", check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "report in reports/nightly.md" in rerun.stdout
    seen = (project.path / ".dvc/tmp/nightly/out/preset.txt").read_text()
    assert seen.split()[:2] == ["preset:", "nightly"]  # the stage saw the nightly preset, in the worktree


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_sigkill_of_the_whole_job_while_the_pipeline_runs(project, tmp_path):
    before = user_files(project)
    nightly, _ = start_sleeping(project, tmp_path)
    assert user_files(project) == before  # also while it runs: a `dvc repro` of the user's meanwhile is safe
    os.killpg(nightly.pid, signal.SIGKILL)  # a CI hard timeout, or the OOM killer taking the job
    nightly.wait(timeout=30)
    assert user_files(project) == before
    rerun_finishes(project)
    assert user_files(project) == before


@pytest.mark.parametrize("point", ["reports/nightly.md", "reports/nightly/history/", ".dvc/tmp/nightly/params.yaml"],
                         ids=["during-the-report", "during-the-history-append", "while-preparing-the-worktree"])
def test_sigkill_at_each_later_step(project, point):
    before = user_files(project)
    killed = start(project, str(BIN / "python"), str(CHILD), point)
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL, f"the nightly never reached {point}"
    assert user_files(project) == before
    rerun_finishes(project)
    assert user_files(project) == before
    history = list((project.path / "reports/nightly/history").glob("*.json"))
    # Killed before its history file was renamed into place, a night leaves none that looks complete; killed
    # at the report, after it, its complete night stays recorded.
    assert len(history) == (2 if point == "reports/nightly.md" else 1)


def test_sigterm_twice_stops_the_pipeline_and_a_rerun_finishes(project, tmp_path):
    before = user_files(project)
    nightly, stage = start_sleeping(project, tmp_path)
    nightly.send_signal(signal.SIGTERM)  # to the nightly alone, as `kill <pid>` or CI's cancel does
    nightly.send_signal(signal.SIGTERM)
    _, err = nightly.communicate(timeout=60)
    assert nightly.returncode == 128 + signal.SIGTERM, err
    assert not alive(stage), "the pipeline's stage outlived the stopped nightly"
    assert not (project.path / "reports/nightly.md").exists()  # a stopped night is not compared
    assert user_files(project) == before
    rerun_finishes(project)


def test_a_second_nightly_while_one_runs_is_refused(project, tmp_path):
    before = user_files(project)
    first, _ = start_sleeping(project, tmp_path)
    try:
        second = project.run(str(BIN / "cifarbench"), "nightly", check=False)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert second.returncode == 2
    assert "another `cifarbench nightly`" in second.stderr and ".dvc/tmp/nightly" in second.stderr
    assert user_files(project) == before
    rerun_finishes(project)


def test_a_broken_worktree_left_by_a_killed_git_is_rebuilt(project):
    rerun_finishes(project)
    admin = Path(project.run("git", "-C", ".dvc/tmp/nightly", "rev-parse", "--git-dir").stdout.strip())
    (admin / "index.lock").write_text("")  # what a git killed mid-checkout leaves
    project.set_params(data__val_size=77)
    before = user_files(project)
    rerun_finishes(project)
    assert "val_size: 77" in (project.path / ".dvc/tmp/nightly/params.yaml").read_text()
    assert user_files(project) == before


BROKEN = {"truncated": '{"preset": "nightly", "commit": "abc", "da', "empty": "",
          "no-preset": '{"commit": "abc", "date": "2026-11-27T02:00:00+00:00", "cells": []}',
          "not-utf8": b"\xff\xfe{".decode("latin-1")}


@pytest.mark.parametrize("content", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_baseline_stops_the_night_before_training_naming_the_file(project, content):
    (project.path / "reports/nightly").mkdir(parents=True)
    (project.path / "reports/nightly/baseline.json").write_text(content, encoding="latin-1")
    result = project.run(str(BIN / "cifarbench"), "nightly", check=False)
    assert result.returncode == 2, result.stderr
    assert "error: reports/nightly/baseline.json is not a nightly baseline" in result.stderr
    assert "git checkout -- reports/nightly/baseline.json" in result.stderr and "Traceback" not in result.stderr
    assert not (project.path / ".dvc/tmp/nightly").exists()  # no night of training spent first
    if content == BROKEN["truncated"]:  # once: the way out the message names
        promoted = project.run(str(BIN / "cifarbench"), "nightly", "--update-baseline", check=False)
        assert promoted.returncode == 0, promoted.stderr


@pytest.mark.parametrize("content", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_history_file_is_skipped_with_a_warning_naming_it(project, content):
    bad = project.path / "reports/nightly/history/20261127T020000Z-abc.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content, encoding="latin-1")
    result = project.run(str(BIN / "cifarbench"), "nightly", "--no-run", check=False)
    assert result.returncode == 0, result.stderr
    assert f"warning: skipping {bad.relative_to(project.path)}" in result.stderr and "Traceback" not in result.stderr
    assert (project.path / "reports/nightly.md").is_file()
    assert len(list(bad.parent.glob("*.json"))) == 2  # tonight recorded; the bad file left for the user
