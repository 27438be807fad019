"""What an executor costs per run, local vs Ray; optionally the smoke matrix under each.

    python tests/benchmarks/bench_executor.py [--runs 40] [--gpu-runs 6]
    PYTHONPATH=tests python tests/benchmarks/bench_executor.py --matrix [--archs lenet5 resnet18]

An empty run is `int(0)` submitted through the executor's public interface (submit, next_done), the
executor already warm. Per executor: latency (one run submitted, its result awaited; median over runs)
and throughput cost (all runs submitted at once; wall time / runs). Ray runs on a 2-node cluster on this
machine (ray.cluster_utils, 1 CPU per node): runs asking for a CPU reuse Ray's warm workers; runs asking for
a (fake, declared) GPU get a fresh worker process each (see execute/ray_cluster.py), measured separately.
--matrix: `dvc repro` of the smoke preset in a temporary git + DVC repo (tests/project.py), once with the
local executor and once on the 2-node Ray cluster; wall time of the whole command.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from cifarbench.execute import ExecutorConfig, open_executor


def empty_runs(executor, runs: int) -> tuple[float, float]:
    """(median latency of one run, wall time per run with all in flight), seconds."""
    for _ in range(2 * executor.slots):  # warm-up: every worker started and has run once
        executor.submit(None, int, 0)
        executor.next_done()
    latency = []
    for k in range(runs):
        started = time.perf_counter()
        executor.submit(k, int, 0)
        assert executor.next_done().ok
        latency.append(time.perf_counter() - started)
    started = time.perf_counter()
    for k in range(runs):
        executor.submit(k, int, 0)
    while executor.pending():
        assert executor.next_done().ok
    return statistics.median(latency), (time.perf_counter() - started) / runs


@contextlib.contextmanager
def ray_cluster(gpus: int):
    """A head and one more node, 1 CPU and `gpus` declared GPUs each; yields its address."""
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=1, num_gpus=gpus, object_store_memory=80 * 2**20)
    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        print(f"  2-node Ray cluster started in {time.perf_counter() - started:.1f} s")
        yield cluster.address
    finally:
        cluster.shutdown()


def report(name: str, cfg: ExecutorConfig, gpu: bool, runs: int) -> None:
    started = time.perf_counter()
    executor = open_executor(cfg, gpu=gpu)
    try:
        opened = time.perf_counter() - started
        latency, per_run = empty_runs(executor, runs)
    finally:
        executor.close()
    print(f"{name:<34} open {opened:5.1f} s   latency {1e3 * latency:8.1f} ms   "
          f"{1e3 * per_run:8.1f} ms/run with {runs} in flight   ({executor.where})", flush=True)


def matrix(archs: list[str] | None) -> None:
    from fake_cifar import write_archive
    from project import ROOT, Project

    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    chosen = {"architectures": {a: params["architectures"][a] for a in archs}} if archs else {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        md5 = write_archive(archive)
        for kind in ("local", "ray"):
            folder = Path(tmp) / kind
            folder.mkdir()
            project = Project.create(folder, preset="smoke", data__url=str(archive), data__md5=md5,
                                     data__val_size=100, **chosen)
            project.repro("prepare")  # download + prepare are not the executor's
            with ray_cluster(gpus=0) if kind == "ray" else contextlib.nullcontext(None) as address:
                env = {"CIFARBENCH_EXECUTOR": kind, **({"CIFARBENCH_RAY_ADDRESS": address} if address else {})}
                started = time.perf_counter()
                out = project.repro(**env).stdout
                seconds = time.perf_counter() - started
            cells = next((line for line in out.splitlines() if line.startswith("train (smoke)")), "")
            print(f"smoke matrix, dvc repro (tune, train, report), {kind:<5}: {seconds:6.1f} s   {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="empty runs per measurement (default %(default)s)")
    parser.add_argument("--gpu-runs", type=int, default=6, help="empty runs asking for a GPU (fresh worker each)")
    parser.add_argument("--matrix", action="store_true", help="also time the smoke matrix under each executor")
    parser.add_argument("--archs", nargs="*", help="--matrix: only these architectures (default: all)")
    args = parser.parse_args()
    print("per-run overhead of an empty run (int(0)):")
    report("local (worker processes)", ExecutorConfig(kind="local"), False, args.runs)
    with ray_cluster(gpus=0) as address:
        report("ray, 2 nodes, runs ask 1 CPU", ExecutorConfig(kind="ray", address=address), False, args.runs)
    with ray_cluster(gpus=1) as address:
        report("ray, 2 nodes, runs ask 1 fake GPU", ExecutorConfig(kind="ray", address=address), True, args.gpu_runs)
    if args.matrix:
        matrix(args.archs)


if __name__ == "__main__":
    main()
