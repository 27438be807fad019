"""The Ray executor on a real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head and
one more node, each declaring 1 CPU and 1 fake GPU, so Ray gives every run its own CUDA_VISIBLE_DEVICES
while torch trains on the CPU): the smoke pipeline through `dvc repro` across both nodes, the same numbers as
the local executor, a node killed mid-run, and Ctrl-C mid-matrix. The cluster is always torn down, and no
process of it (nor of the commands the tests start) may be left behind."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mlflow.tracking import MlflowClient  # noqa: E402

from cifarbench.config import TrackingConfig  # noqa: E402
from cifarbench.data.splits import prepare_splits  # noqa: E402
from cifarbench.execute import ExecutorConfig, running  # noqa: E402
from cifarbench.io import read_json  # noqa: E402
from cifarbench.params import parse  # noqa: E402
from cifarbench.plan import resolve_cell  # noqa: E402
from cifarbench.runner import RunSpec, train_run  # noqa: E402
from cifarbench.tracking import Tracker  # noqa: E402
from project import Project  # noqa: E402
from small_params import small_params  # noqa: E402

pytestmark = pytest.mark.slow

PARAMS = small_params()
MARKER = "CIFARBENCH_TEST_RAY_CLUSTER"  # in the environment of every process of the test cluster
TOKEN = uuid.uuid4().hex
NODE = dict(num_cpus=1, num_gpus=1, object_store_memory=80 * 2**20)  # 80 MiB: the runs pass small results


@pytest.fixture(scope="module")
def cluster():
    """Two nodes, torn down after the module whatever happened; then no process of theirs may be left."""
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        with _marked():
            cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        add_node(cluster)
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()
        left = _marked_processes()
        for pid in left:  # fail, but leave nothing behind for the next test run
            _kill(pid)
        assert not left, f"processes of the test cluster left running: {left}"


def add_node(cluster) -> None:
    with _marked():
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()


@contextlib.contextmanager
def _marked():
    """The marker in this process's environment while a node starts: its raylet, and so every Ray worker
    of that node, inherits it (this process's other children, started later, do not)."""
    os.environ[MARKER] = TOKEN
    try:
        yield
    finally:
        del os.environ[MARKER]


def _marked_processes(wait_s: float = 15) -> dict[int, str]:
    """Processes other than this one whose environment carries the marker (after up to `wait_s` for them
    to exit: raylets stop their workers asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if f"{MARKER}={TOKEN}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
            except OSError:  # gone meanwhile, or not ours to read
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ray_env(cluster) -> dict[str, str]:
    return {"CIFARBENCH_EXECUTOR": "ray", "CIFARBENCH_RAY_ADDRESS": cluster.address}


def node_ids(cluster) -> tuple[str, list[str]]:
    """(head node id, ids of the other live nodes)."""
    return cluster.head_node.node_id, [n.node_id for n in cluster.worker_nodes]


# --- the smoke pipeline through `dvc repro` on the cluster ------------------------------------------------

ARCHS = ("lenet5", "resnet18")
ABLATIONS = ("baseline", "flip")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cifar_archive, cluster):
    """A smoke project of 2 architectures x 2 ablations, its first `dvc repro` on the Ray cluster."""
    archive, md5 = cifar_archive
    project = Project.create(tmp_path_factory.mktemp("ray-smoke"), preset="smoke", data__url=str(archive),
                             data__md5=md5, data__val_size=100,
                             architectures={a: PARAMS["architectures"][a] for a in ARCHS},
                             ablations={a: PARAMS["ablations"][a] for a in ABLATIONS})
    started = time.perf_counter()
    result = project.repro(**ray_env(cluster))
    print(f"smoke dvc repro on the 2-node Ray cluster, {len(ARCHS) * len(ABLATIONS)} runs: "
          f"{time.perf_counter() - started:.1f} s")
    return project, result


def client_for(project: Project) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project.path / 'mlflow.db'}")


def training_runs(client: MlflowClient, current_only: bool = True) -> list:
    experiment = client.get_experiment_by_name("cifarbench")
    query = "tags.`cifarbench.current` = 'true'" if current_only else ""
    return [r for r in client.search_runs([experiment.experiment_id], query, max_results=1000)
            if "cifarbench.kind" not in r.data.tags]


def test_smoke_matrix_runs_on_both_nodes_each_run_with_its_own_gpu(smoke, cluster):
    project, result = smoke
    assert "ray: 2 node(s), 2 run(s) at once" in result.stdout
    runs = {r.info.run_name: r for r in training_runs(client_for(project))}
    assert set(runs) == {f"{a}/{b}/seed0" for a in ARCHS for b in ABLATIONS}
    head, others = node_ids(cluster)
    for name, run in runs.items():
        tags = run.data.tags
        assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics
        assert {tags[k] for k in ("arch", "ablation", "seed", "preset")} <= {*ARCHS, *ABLATIONS, "0", "smoke"}
        assert tags["dvc_stage"] == "train" and tags["status"] == "completed" and tags["cell_key"]
        assert tags["fast.device"] == "cpu" and tags["fast.threads"] == "1" and tags["host"]
        assert tags["worker"] in {head, *others}, name
        assert tags["cuda_visible_devices"] == "0", name  # its node's one (fake) GPU, given by Ray
        metrics = read_json(project.path / "runs/smoke/metrics" / tags["arch"] / f"{tags['ablation']}.json")
        trained = tags["trained"] == "true"  # a smoke batch-norm network may not settle in 2 epochs: never averaged
        assert metrics["status"] == "completed"
        assert metrics["test_acc_mean"] == (pytest.approx(run.data.metrics["test_acc"]) if trained else None)
    assert {r.data.tags["worker"] for r in runs.values()} == {head, *others}  # both nodes trained


def test_ctrl_c_mid_matrix_stops_everything_and_a_rerun_completes(smoke, cluster):
    """SIGINT to the process group of `dvc repro` (what Ctrl-C in a terminal does) while runs are in flight."""
    project, _ = smoke
    project.set_params(presets__smoke__train__epochs=6)  # every cell retrains, each run for a few seconds
    checkpoints = project.path / "runs" / "checkpoints"
    with open(project.path / "interrupted.log", "w") as log:
        repro = subprocess.Popen(["dvc", "repro"], cwd=project.path, env=project.env(**ray_env(cluster)),
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not list(checkpoints.rglob("seed*.pt")):  # a run has trained an epoch: mid-matrix
                assert repro.poll() is None, (project.path / "interrupted.log").read_text()
                assert time.monotonic() < deadline, "no run started in 300 s"
                time.sleep(0.2)
            os.killpg(repro.pid, signal.SIGINT)
            code = repro.wait(timeout=120)
        finally:
            if repro.poll() is None:
                os.killpg(repro.pid, signal.SIGKILL)
                repro.wait()
    output = (project.path / "interrupted.log").read_text()
    assert code != 0, output
    assert not _group_members(repro.pid), output
    left = list(checkpoints.rglob("seed*.pt"))
    assert left, "checkpoints are kept for the rerun"
    stamps = {p: p.stat().st_mtime_ns for p in left}
    time.sleep(3)
    assert {p: p.stat().st_mtime_ns for p in left if p.exists()} == stamps, "a cancelled run is still training"
    client = client_for(project)
    statuses = {r.info.run_name + "@" + r.info.run_id: r.info.status for r in training_runs(client, current_only=False)}
    assert "RUNNING" not in statuses.values(), statuses
    assert "KILLED" in statuses.values(), output

    rerun = project.repro(**ray_env(cluster))
    assert "Running stage 'train'" in rerun.stdout
    runs = training_runs(client)
    assert len(runs) == len(ARCHS) * len(ABLATIONS)
    assert all(r.info.status == "FINISHED" and r.data.params["train.epochs"] == "6" for r in runs)
    assert "RUNNING" not in {r.info.status for r in training_runs(client, current_only=False)}


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == pgid:
                members.append(int(entry.name))
        except OSError:
            continue
    return members


# --- the executor itself, this process as its coordinator -------------------------------------------------

@pytest.fixture(scope="module")
def prepared(cifar_archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_splits(cifar_archive[0], out, val_size=100, seed=0)
    return out


def specs(folder: Path, prepared: Path, arch: str, seeds: list[int], **train) -> list[RunSpec]:
    """Smoke runs of `arch`'s baseline (train: overrides of the preset's train section)."""
    tree = copy.deepcopy(PARAMS)
    tree["preset"] = "smoke"
    tree["presets"]["smoke"]["seeds"] = seeds
    tree["presets"]["smoke"]["train"].update(train)
    cell = resolve_cell(parse(tree).plan, arch, "baseline")
    tracker = Tracker.open(TrackingConfig(uri=f"sqlite:///{folder}/mlflow.db", experiment="ray"))
    (folder / "work").mkdir(parents=True, exist_ok=True)
    tags = {"git_commit": "test", "preset": "smoke", "arch": arch, "ablation": "baseline"}
    return [RunSpec(cell, seed, prepared, folder / "work", folder / "models", tracker, tags | {"seed": str(seed)})
            for seed in cell.seeds]


def run_all(cfg: ExecutorConfig, runs: list[RunSpec]) -> dict[str, dict]:
    with running(cfg, gpu=True) as executor:
        for spec in runs:
            executor.submit(spec.name, train_run, spec)
        done = [executor.next_done() for _ in runs]
    assert all(d.ok for d in done), [d.error for d in done]
    return {d.key: d.result for d in done}


def assert_same_numbers(a: dict, b: dict) -> None:
    x, y = a["summary"], b["summary"]
    assert (x["test_acc"], x["test_loss"], x["best_val_acc"]) == (y["test_acc"], y["test_loss"], y["best_val_acc"])
    assert x["fast_paths"]["threads"] == y["fast_paths"]["threads"] == 1
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_same_numbers_bit_for_bit_on_ray_and_local(tmp_path, prepared, cluster, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = {}
    for kind in ("local", "ray"):
        runs = [s for arch in ("lenet5", "resnet18") for s in specs(tmp_path / kind / arch, prepared, arch, [0, 1])]
        results[kind] = run_all(ExecutorConfig(kind=kind, address=cluster.address), runs)
    assert len(results["ray"]) == 4 and results["ray"].keys() == results["local"].keys()
    for name in results["ray"]:
        assert_same_numbers(results["ray"][name], results["local"][name])


def test_a_run_on_a_killed_node_resumes_from_its_checkpoint_in_the_same_mlflow_run(tmp_path, prepared, cluster,
                                                                                   monkeypatch):
    """Two seeds, one per node; the non-head node is killed once its run has a checkpoint and has logged an
    epoch. Ray retries the run (on a node added meanwhile); it resumes, and ends as an uninterrupted run."""
    monkeypatch.chdir(tmp_path)
    epochs = 8
    runs = specs(tmp_path / "killed", prepared, "resnet18", [0, 1], epochs=epochs)
    head, [doomed] = node_ids(cluster)
    client = runs[0].tracker.client()
    with running(ExecutorConfig(kind="ray", address=cluster.address, max_retries=2), gpu=True) as executor:
        for spec in runs:
            executor.submit(spec.seed, train_run, spec)
        victim, run_id = _wait_for_a_checkpointed_run_on(doomed, runs, client)
        steps_before = {m.step for m in client.get_metric_history(run_id, "val_acc")}
        assert not victim.file(".result.json").exists() and max(steps_before) < epochs
        killed = next(n for n in cluster.worker_nodes if n.node_id == doomed)
        cluster.remove_node(killed, allow_graceful=False)
        add_node(cluster)  # where the retry goes (and the next tests' second node)
        done = {d.key: d for d in (executor.next_done() for _ in runs)}
    assert all(d.ok for d in done.values()), {k: d.error for k, d in done.items()}
    resumed = done[victim.seed].result
    assert resumed["summary"]["run_id"] == run_id  # the same MLflow run, continued
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["worker"] not in (doomed, "local")  # finished on a live node
    steps = [m.step for m in client.get_metric_history(run_id, "val_acc")]
    assert len(steps) == len(set(steps)) and max(steps) == epochs, steps  # resumed: no epoch trained twice
    assert [m.step for m in client.get_metric_history(run_id, "test_acc")] == [0]
    print(f"killed node {doomed[:8]} after epoch(s) {sorted(steps_before)}; val_acc steps logged: {sorted(steps)}")

    [uninterrupted] = [s for s in specs(tmp_path / "ref", prepared, "resnet18", [0, 1], epochs=epochs)
                       if s.seed == victim.seed]
    assert_same_numbers(resumed, run_all(ExecutorConfig(kind="local"), [uninterrupted])[victim.name])


def _wait_for_a_checkpointed_run_on(node: str, runs: list[RunSpec], client, timeout_s: float = 300):
    """The run training on `node` and its MLflow id, once it has a checkpoint and has logged an epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for spec in runs:
            id_file = spec.file(".mlflow-run")
            if not (id_file.is_file() and spec.file(".pt").is_file()):
                continue
            run_id = id_file.read_text().strip()
            run = client.get_run(run_id)
            if run.data.tags.get("worker") == node and client.get_metric_history(run_id, "val_acc"):
                return spec, run_id
        time.sleep(0.2)
    raise AssertionError(f"no run checkpointed on node {node} in {timeout_s} s")
