"""Benchmark: the smoke preset's whole matrix through `dvc repro` in a fresh temp project, each stage's
wall time, then a no-op `dvc repro` (median of 3). Prints numbers; asserts nothing.

    python tests/benchmarks/bench_pipeline.py [--executor local|ray] [--keep]

Timings vary up to 2x on shared machines: compare runs made side by side, and never across CPU models.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: fake_cifar, project

from fake_cifar import write_archive  # noqa: E402
from project import Project  # noqa: E402


def timed_repro(project: Project, **env) -> tuple[float, dict[str, float]]:
    """Wall time of `dvc repro` and of each stage (from the moment DVC announces it to the next)."""
    proc = subprocess.Popen(["dvc", "repro"], cwd=project.path, env=project.env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started = last = time.perf_counter()
    stages, current = {}, "dvc start"
    for line in proc.stdout:
        match = re.match(r"Running stage '([^']+)'", line)
        if match:
            stages[current] = time.perf_counter() - last
            current, last = match.group(1), time.perf_counter()
    proc.wait()
    stages[current] = time.perf_counter() - last
    if proc.returncode:
        raise SystemExit(f"dvc repro failed ({proc.returncode})")
    return time.perf_counter() - started, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    parser.add_argument("--keep", action="store_true", help="keep the temp project (its path is printed)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    archive = folder / "cifar-10-python.tar.gz"
    md5 = write_archive(archive)
    (folder / "p").mkdir()
    project = Project.create(folder / "p", preset="smoke", data__url=str(archive), data__md5=md5, data__val_size=100)
    env = {"CIFARBENCH_EXECUTOR": args.executor}
    if args.executor == "ray":
        env["CIFARBENCH_RAY_ADDRESS"] = "local"
    total, stages = timed_repro(project, **env)
    print(f"smoke preset, whole matrix, executor {args.executor}: dvc repro {total:.1f} s")
    for name, seconds in stages.items():
        print(f"  {name:12s} {seconds:6.1f} s")
    noop = [timed_repro(project, **env)[0] for _ in range(3)]
    print(f"no-op dvc repro: median {statistics.median(noop):.2f} s ({', '.join(f'{t:.2f}' for t in noop)})")
    print(f"project: {project.path}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
