"""Probes of whole `dvc repro` runs of a small smoke project (lenet5 x {baseline, flip}, one seed): dvc.lock
torn by a kill, SIGKILL at each phase (download, prepare, a tuning trial, the report's folder swap), a
RUNNING trial of another host, two `dvc repro` in one repo, two repos at once, and no listening socket.

Required every time: the user's params.yaml keeps its bytes, a plain `dvc repro` (after the command an
error names, if any) finishes, and its numbers are those of an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from cifarbench.io import read_json
from cifarbench.tuning import FlockLock
from project import BIN, Project, architecture

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KILLPOINT = Path(__file__).with_name("killpoint")  # its sitecustomize.py kills where PROBE_KILL_* says
PRESET = Path("runs/smoke")


def small_project(path: Path, url: str, md5: str) -> Project:
    path.mkdir()
    project = Project.create(path, preset="smoke", data__url=url, data__md5=md5, data__val_size=100,
                             presets__smoke__tune_epochs=2)  # 2-epoch trials: a kill at the first report is mid-trial
    tree = project.params
    tree["architectures"] = {"lenet5": architecture(tree, "lenet5")}
    tree["ablations"] = {k: tree["ablations"][k] for k in ("baseline", "flip")}
    project.set_params(architectures=tree["architectures"], ablations=tree["ablations"])
    project.git("commit", "-qam", "small matrix")
    return project


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cifar_archive) -> Project:
    """The small project after one uninterrupted `dvc repro`: the reference numbers. Probes that change it
    work on a copy (clone)."""
    archive, md5 = cifar_archive
    project = small_project(tmp_path_factory.mktemp("finished") / "repo", str(archive), md5)
    project.repro()
    return project


def clone(project: Project, path: Path) -> Project:
    shutil.copytree(project.path, path, symlinks=True)
    return Project(path)


def metrics(project: Project) -> dict:
    return {p.stem: read_json(p)["test_acc_mean"] for p in sorted((project.path / PRESET / "metrics/lenet5").glob("*.json"))}


def training_runs(project: Project) -> list:
    client = MlflowClient(f"sqlite:///{project.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifarbench")
    return [r for r in client.search_runs([experiment.experiment_id], "", max_results=1000)
            if "cifarbench.kind" not in r.data.tags]


def start(project: Project, *cmd: str, **env) -> subprocess.Popen:
    """A command in its own process group, as a shell starts a job."""
    return subprocess.Popen(cmd or ("dvc", "repro"), cwd=project.path, env=project.env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def killing(**point) -> dict:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(KILLPOINT), os.environ.get("PYTHONPATH")])), **point}


# --- dvc.lock torn -----------------------------------------------------------------------------------------

def test_a_torn_dvc_lock_is_moved_aside_by_doctor_and_repro_trains_nothing_again(finished, tmp_path):
    project = clone(finished, tmp_path / "repo")
    before, runs = project.params, len(training_runs(project))
    text = (project.path / "dvc.lock").read_text()
    cut = text.index("- path:", text.index("\n  train:\n")) + len("- pa")  # killed while DVC rewrote it
    (project.path / "dvc.lock").write_text(text[:cut])

    failed = project.repro(check=False)
    assert failed.returncode != 0
    assert "'./dvc.lock' validation failed" in failed.stderr and "expected a dictionary" in failed.stderr

    doctor = project.run(str(BIN / "cifarbench"), "doctor")
    assert "repaired: dvc.lock: not a valid lock file" in doctor.stdout and "moved aside to dvc.lock.torn-" in doctor.stdout
    [aside] = project.path.glob("dvc.lock.torn-*")
    assert aside.read_text() == text[:cut]  # kept, for whoever wants to look

    rerun = project.repro()
    assert "train (smoke): 2 cells, 0 to train" in rerun.stdout
    assert "tune lenet5 trial" not in rerun.stdout  # the finished study asked no trial
    assert len(training_runs(project)) == runs and metrics(project) == metrics(finished)
    assert project.params == before
    assert project.repro().stdout.count("didn't change, skipping") == 5  # the rebuilt lock is whole


# --- SIGKILL at each phase --------------------------------------------------------------------------------

def test_sigkill_at_each_phase_then_a_plain_repro_finishes_with_the_same_numbers(finished, serve, cifar_archive,
                                                                                  tmp_path):
    archive, md5 = cifar_archive
    body, served = archive.read_bytes(), []

    def slow_first_time(request, stop):  # the first download trickles, so the kill lands in it
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        step = 8192 if not served else len(body)
        served.append(1)
        for start_at in range(0, len(body), step):
            request.wfile.write(body[start_at:start_at + step])
            request.wfile.flush()
            if step < len(body) and stop.wait(0.05):
                return

    project = small_project(tmp_path / "repo", serve(slow_first_time), md5)
    params = (project.path / "params.yaml").read_bytes()
    raw = project.path / "data/raw"

    def downloading() -> bool:
        return raw.is_dir() and any(p.stat().st_size for p in raw.glob(".cifar-10-python.tar.gz.*.tmp"))

    job = start(project)  # 1. mid-download: the whole job killed
    deadline = time.monotonic() + 300
    while not downloading():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (raw / "cifar-10-python.tar.gz").exists()

    for point, check in (
            ({"PROBE_KILL_RENAME": "data/prepared/info.json"},  # 2. prepare, at its last write
             lambda: not (project.path / "data/prepared/info.json").exists()),
            ({"PROBE_KILL_TRIAL": "1"}, lambda: True),  # 3. the tune stage, mid-trial
            ({"PROBE_KILL_RENAME": "reports/figures"},  # 4. the report, between its folder swap's renames
             lambda: not (project.path / "reports/figures").exists())):
        job = start(project, **killing(**point))
        out, _ = job.communicate(timeout=600)
        assert job.returncode != 0, out
        assert check(), out
        assert (project.path / "params.yaml").read_bytes() == params

    rerun = project.repro()
    assert "Stage 'train' didn't change, skipping" in rerun.stdout  # trained before the report was killed
    assert (project.path / "params.yaml").read_bytes() == params
    assert metrics(project) == metrics(finished)
    assert read_json(project.path / PRESET / "tuned/lenet5.json")["optimizer"] == \
        read_json(finished.path / PRESET / "tuned/lenet5.json")["optimizer"]
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(project.path / "optuna/studies.journal")))
    [study] = optuna.get_all_study_summaries(journal)
    trials = optuna.load_study(study_name=study.study_name, storage=journal).get_trials()
    killed = [t for t in trials if t.state == TrialState.FAIL]
    # Each killed trial ran again to an end: completed, or pruned as any trial may be (its epochs decide).
    assert killed and all(any(r.user_attrs.get("retry_of") == t.number and r.state in (TrialState.COMPLETE,
                                                                                       TrialState.PRUNED)
                              for r in trials) for t in killed), \
        [(t.number, t.state.name, t.user_attrs.get("retry_of")) for t in trials]
    figures = project.path / "reports"
    assert sorted(p.name for p in figures.iterdir() if p.name.startswith(".")) == []  # no swap leftovers
    assert sorted(p.name for p in (figures / "figures").iterdir()) == \
        sorted(p.name for p in (finished.path / "reports/figures").iterdir())


# --- tuning: a trial of another host ---------------------------------------------------------------------

def test_a_running_trial_of_another_host_is_failed_and_requeued_not_waited_for(finished, tmp_path):
    """The journal serves one machine: a RUNNING trial owned by another hostname is a previous life of
    this one (a container restarted under a new name), not a live trial to wait for."""
    project = clone(finished, tmp_path / "repo")
    journal = project.path / "optuna/studies.journal"
    study_name = read_json(project.path / PRESET / "tuned/lenet5.json")["study"]
    project.set_params(presets__smoke__tune_trials=3)  # one more trial: the stage reruns and resumes the study
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(journal), FlockLock(f"{journal}.lock")))
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphan = study.ask({"lr": FloatDistribution(0.005, 0.5, log=True), "weight_decay": FloatDistribution(1e-6, 1e-2, log=True)})
    orphan.set_user_attr("owner", "otherhost/123@456")

    started = time.monotonic()
    result = project.run("timeout", "300", "dvc", "repro", "tune", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tune lenet5 trial {orphan.number}: its process died; queued again" in result.stdout
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and retry.params == trials[orphan.number].params
    print(f"tune stage with an orphan trial: {time.monotonic() - started:.0f} s")


# --- two at once ------------------------------------------------------------------------------------------

def test_a_second_repro_in_the_same_repo_fails_fast_with_dvcs_lock_error(finished, tmp_path):
    """DVC 3 releases its repo lock while a stage's command runs; what stops a second `dvc repro` then is
    the per-stage lock on the deps and outs (.dvc/tmp/rwlock): it fails at once on the first stage whose
    files the running stage holds, having changed nothing."""
    project = clone(finished, tmp_path / "repo")
    project.set_params(ablations__flip__train__augment__policy="crop")  # one cell to train again: time to overlap
    first = start(project)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if line.startswith("Running stage 'train'"):
            break
    assert first.poll() is None, "".join(seen)
    started = time.monotonic()
    second = project.repro(check=False)
    assert time.monotonic() - started < 30
    assert second.returncode != 0
    assert ("is busy, it is being blocked by" in second.stderr and "dvc repro" in second.stderr) or \
        "Unable to acquire lock" in second.stderr, second.stderr
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, "".join(seen) + out
    assert "train (smoke): 2 cells, 1 to train" in out
    assert project.run(str(BIN / "cifarbench"), "doctor").returncode == 0  # nothing damaged
    assert project.run("dvc", "status").stdout.strip() == "Data and pipelines are up to date."


def listening_sockets(root_pids: list[int]) -> set[str]:
    """Listening TCP or Unix sockets held by the process trees under `root_pids` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tree, grew = set(root_pids), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    inodes = set()
    for pid in tree:
        for fd in Path(f"/proc/{pid}/fd").glob("*") if Path(f"/proc/{pid}/fd").is_dir() else []:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(f"{table} {fields[1]}")
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[3], 16) & 0x10000 and fields[6] in inodes:  # __SO_ACCEPTCON: listening
            found.add(f"unix {fields[7] if len(fields) > 7 else '@'}")
    return found


def test_two_repos_at_once_finish_independently_and_nothing_listens(finished, tmp_path):
    """Two users' (or one user's two) checkouts on one machine: separate stores, journals and outputs, and
    no socket another uid could connect to (the local executor talks over pipes)."""
    projects = []
    for name in ("one", "two"):
        project = clone(finished, tmp_path / name)
        for leftover in ("mlflow.db", "mlruns"):  # each its own store, created by its own run
            shutil.rmtree(project.path / leftover) if (project.path / leftover).is_dir() else (project.path / leftover).unlink()
        project.set_params(ablations__flip__train__augment__policy="crop")
        projects.append(project)
    jobs = [start(p) for p in projects]
    seen = set()
    while any(job.poll() is None for job in jobs):
        seen |= listening_sockets([job.pid for job in jobs])
        time.sleep(0.2)
    for job in jobs:
        out, _ = job.communicate()
        assert job.returncode == 0, out
        assert "train (smoke): 2 cells, 1 to train" in out
    assert seen == set()
    for project in projects:
        [run] = training_runs(project)
        assert run.info.run_name == "lenet5/flip/seed0"
        assert run.info.artifact_uri.startswith((project.path / "mlruns").as_uri())
    assert metrics(projects[0]) == metrics(projects[1])
