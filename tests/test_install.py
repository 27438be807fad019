"""An honest install: the versions a committed report was made with are pinned (constraints.txt) within
pyproject's ranges; the private APIs of other libraries that remain fail here, by name, when they change;
README states the Python version and the presets that pyproject and params.yaml define, and the presets that
share the default's budget share it."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from cifarbench.params import load
from cifarbench.tuning.storage import heartbeat, journal_storage

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
README = (ROOT / "README.md").read_text()
REPORT = ROOT / "reports" / "comparison.md"


def pinned() -> dict[str, Version]:
    """constraints.txt as {canonical name: version}; every line but comments must be `name==version`."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() and version.strip(), f"constraints.txt: {line!r} is not `name==version`"
        pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def declared() -> list[Requirement]:
    """pyproject's dependencies and every extra's."""
    extras = [r for group in PYPROJECT.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in [*PYPROJECT["dependencies"], *extras]]


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_dependency_is_pinned_within_its_range(requirement):
    pins = pinned()
    name = canonicalize_name(requirement.name)
    assert name in pins, (f"{requirement} (pyproject.toml) is not pinned in constraints.txt: regenerate it "
                          "(README, 'Two commands on a fresh machine')")
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}: widen the range or "
        "regenerate constraints.txt in an environment that satisfies it")


def test_constraints_hold_the_versions_the_committed_report_names():
    provenance = dict(re.findall(r"^\| (torch|mlflow|python) \| ([^ |]+) \|$", REPORT.read_text(), re.M))
    assert {"torch", "mlflow", "python"} <= provenance.keys(), f"{REPORT} no longer names torch, mlflow and python"
    pins = pinned()
    for package in ("torch", "mlflow"):
        assert pins[package] == Version(Version(provenance[package]).public), (
            f"the committed report was made with {package} {provenance[package]}, constraints.txt pins "
            f"{pins[package]}: regenerate constraints.txt in the report's environment")
    assert f"Python {provenance['python']}" in (ROOT / "constraints.txt").read_text().splitlines()[0], (
        f"constraints.txt's header should name the report's Python {provenance['python']}")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_heartbeat_keeps_a_running_trial_alive_and_stops_with_its_block(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=1,
                                         grace_period=1)
    study = optuna.create_study(storage=storage, study_name="heartbeat")
    beating, silent = study.ask(), study.ask()  # silent: never beats, so never stale

    def state(trial) -> TrialState:
        optuna.storages.fail_stale_trials(study)
        return study.get_trials(deepcopy=False)[trial.number].state

    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("heartbeat"),
                                                           beating.number)
    with heartbeat(trial_id, storage):
        time.sleep(2.5)  # > twice the grace period: alive only because beats keep coming
        assert state(beating) == TrialState.RUNNING, "a trial whose heartbeat runs was failed as stale"
    time.sleep(2.5)
    assert state(beating) == TrialState.FAIL, "the heartbeat went on after its block ended (or never beat)"
    assert state(silent) == TrialState.RUNNING


def test_heartbeat_on_a_journal_starts_no_thread(tmp_path):
    storage = journal_storage(str(tmp_path / "studies.journal"))
    before = threading.active_count()
    with heartbeat(0, storage):
        assert threading.active_count() == before


def test_process_pool_keeps_its_workers_in_processes():
    """execute/local.py LocalExecutor.close reads ProcessPoolExecutor._processes (private; no public way to kill
    the workers and wait for them before Python 3.14): a dict of worker pid -> multiprocessing Process."""
    pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        worker = pool.submit(os.getpid).result(timeout=120)
        processes = getattr(pool, "_processes", None)
        assert isinstance(processes, dict), (
            "ProcessPoolExecutor._processes is gone or no longer a dict: LocalExecutor.close "
            "(execute/local.py) can no longer kill its workers; use Python 3.14's kill_workers() there")
        assert all(isinstance(p, multiprocessing.process.BaseProcess) for p in processes.values())
        assert worker in {p.pid for p in processes.values()}
    finally:
        pool.shutdown()


def test_readme_states_pyprojects_python():
    minimum = re.fullmatch(r">=\s*(\d+\.\d+)", PYPROJECT["requires-python"])
    assert minimum, f"requires-python {PYPROJECT['requires-python']!r} is not `>=X.Y`: update this test"
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        stated = re.findall(r"Python (?:≥|>=) ?(\d+\.\d+)", doc.read_text())
        assert all(v == minimum[1] for v in stated), (
            f"{doc.name} says Python ≥ {', '.join(stated)}, pyproject.toml requires-python {minimum[0]}")
    assert re.search(rf"Python (?:≥|>=) ?{re.escape(minimum[1])}", README), "README no longer states the Python version"


def test_readme_lists_exactly_params_presets():
    listing = re.search(r"^Presets \(`preset:` in `params.yaml`\): (.+?)\n\n", README, re.M | re.S)
    assert listing, "README's 'Presets (`preset:` in `params.yaml`): ...' paragraph is gone: update this test"
    in_readme = re.findall(r"`(\w+)` \(", listing[1])
    in_params = list(yaml.safe_load((ROOT / "params.yaml").read_text())["presets"])
    assert sorted(in_readme) == sorted(in_params), (
        f"README lists presets {in_readme}, params.yaml defines {in_params}")


def test_the_projects_course_and_nightly_presets_train_each_architecture_at_the_defaults_budget():
    """They answer other questions at the default's budget (width, stem, epochs, optimizer), so their numbers are
    comparable with the default's: a budget changed in one place only would make them silently differ."""
    params = load(ROOT / "params.yaml")
    for preset in ("course", "nightly"):
        plan = params.with_preset(preset).plan
        for arch in plan.architectures:
            spec = plan.architectures[arch].presets
            assert (spec[preset].model, spec[preset].train) == (spec["default"].model, spec["default"].train), (preset, arch)
    assert list(params.with_preset("course").plan.architectures) == ["lenet5", "vgg11", "resnet18"]

