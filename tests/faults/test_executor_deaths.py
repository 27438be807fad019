"""Probe: a worker of the local executor dies while another run has already returned but not yet been
handed to the caller. Before: the pool's rebuild re-queued every future in flight, the finished one
included, so it trained again (charged a retry) or, past max_retries, was reported failed though it had
finished.

Required: the finished run is handed out once, with its result, and never runs again; only the run whose
worker died is retried (or given up).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cifarbench.execute import ExecutorConfig
from cifarbench.execute.local import LocalExecutor

pytestmark = pytest.mark.faults


def finish_and_count(log: str) -> str:
    with open(log, "a") as f:
        f.write("ran\n")
    return "finished"


def die_once(marker: str) -> str:
    """Kill this worker (as the OOM killer would) the first time, after the other run has returned."""
    if not Path(marker).exists():
        Path(marker).touch()
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)
    return "retried"


@pytest.mark.slow  # two pools of warm workers start (torch, MLflow, Optuna imported): ~25 s idle, ~60 s on busy cores
def test_a_run_that_returned_before_a_worker_died_is_kept(tmp_path):
    executor = LocalExecutor(ExecutorConfig(max_retries=1), gpu=False)
    if executor.slots < 2:
        executor.close()
        pytest.skip("needs two worker processes (two cores)")
    try:
        log, marker = tmp_path / "finished.log", tmp_path / "died"
        executor.submit("finishes", finish_and_count, str(log))
        executor.submit("dies", die_once, str(marker))
        deadline = time.monotonic() + 120
        while not (marker.exists() and log.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # both have ended before the caller looks: one returned, one's worker killed
        done = {}
        while executor.pending():
            d = executor.next_done()
            assert d.key not in done, f"{d.key} handed out twice"
            done[d.key] = d
    finally:
        executor.close()
    assert done["finishes"].ok and done["finishes"].result == "finished"
    assert log.read_text() == "ran\n"  # ran once: not re-queued with the run whose worker died
    assert done["dies"].ok and done["dies"].result == "retried"  # the run whose worker died: retried once
