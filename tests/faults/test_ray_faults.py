"""Probes of the Ray executor on a real one-node Ray cluster of 1 CPU started by this process:

1. executor.cpus_per_run above every node's CPUs. Before: Ray queued the runs as infeasible, without an
   error, and `ray.wait` never returned. Required: refused at once, naming the CPUs asked, the largest
   node's CPUs and the fix.
2. A run that hangs, with executor.run_timeout_s of 3 s. Before: nothing ended it. Required: its worker is
   killed past the limit, Ray retries it (max_retries), then it fails with a message naming the run and
   the limit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from cifarbench.errors import CifarbenchError  # noqa: E402
from cifarbench.execute import ExecutorConfig  # noqa: E402
from cifarbench.execute.ray_cluster import RayExecutor  # noqa: E402

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # a Ray cluster starts: ~10 s idle, far more on busy cores


def hang_forever(log: str) -> None:
    """A run that records each attempt, then hangs (as a deadlocked kernel would)."""
    with open(log, "a") as f:
        f.write("started\n")
    while True:
        time.sleep(60)


@pytest.fixture(scope="module")
def one_cpu_cluster():
    """Its workers inherit this environment: PYTHONPATH names this folder, so they import hang_forever."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), before]))
    try:
        ray.init(num_cpus=1, include_dashboard=False, object_store_memory=80 * 2**20, logging_level="WARNING")
        yield
    finally:
        ray.shutdown()
        os.environ.pop("PYTHONPATH") if before is None else os.environ.update(PYTHONPATH=before)


def test_more_cpus_per_run_than_any_node_has_is_refused_at_once(one_cpu_cluster):
    started = time.monotonic()
    with pytest.raises(CifarbenchError) as caught:
        RayExecutor(ExecutorConfig(kind="ray", cpus_per_run=4), gpu=False)
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert "executor.cpus_per_run asks 4 CPUs per run, but the largest live node" in message, message
    assert "has 1" in message and "Lower executor.cpus_per_run in params.yaml to 1" in message, message
    assert ray.is_initialized()  # the cluster this process had joined is left as it was


def test_a_hung_run_is_killed_retried_and_failed_naming_the_run_and_the_limit(one_cpu_cluster, tmp_path):
    log = tmp_path / "attempts.log"
    executor = RayExecutor(ExecutorConfig(kind="ray", max_retries=1, run_timeout_s=3), gpu=False)
    started = time.monotonic()
    try:
        executor.submit("lenet5/baseline/seed0", hang_forever, str(log))
        done = executor.next_done()
    finally:
        executor.close()
    assert time.monotonic() - started < 240  # ended; without the limit this never returns
    assert not done.ok
    assert "run lenet5/baseline/seed0 ran past executor.run_timeout_s (3 s)" in done.error, done.error
    assert log.read_text() == "started\n" * 2  # retried once by Ray: max_retries 1
