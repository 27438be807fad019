"""Probe: a run that hangs (a deadlocked kernel, a stuck file system) on the local executor. Before: nothing
ended it, and the train stage waited forever.

Required: past executor.run_timeout_s its worker is killed and the run is retried like one whose worker died
(from its checkpoint, charged against max_retries), then failed with a message naming the run and the
limit; a run that hangs only once finishes on its retry; a run in flight beside them is not charged.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cifarbench.errors import ConfigError
from cifarbench.execute import ExecutorConfig
from cifarbench.execute.local import LocalExecutor
from cifarbench.params import parse
from small_params import small_params

pytestmark = pytest.mark.faults

LIMIT_S = 2.0


def hang_forever(log: str) -> str:
    with open(log, "a") as f:
        f.write("started\n")
    while True:
        time.sleep(60)


def hang_once(marker: str) -> str:
    """Hangs on its first attempt; its retry finds the marker (as a retried run finds its checkpoint)."""
    if not Path(marker).exists():
        Path(marker).touch()
        hang_forever(marker + ".log")
    return "finished on its retry"


def count_and_finish(log: str) -> str:
    with open(log, "a") as f:
        f.write("ran\n")
    time.sleep(1.0)  # in flight beside a worker that is killed at least once
    return "finished"


@pytest.mark.slow  # a pool of warm workers starts, and starts again after each kill: ~20 s idle, more on busy cores
def test_a_hung_run_is_killed_retried_and_failed_naming_the_run_and_the_limit(tmp_path, capfd):
    executor = LocalExecutor(ExecutorConfig(max_retries=1, run_timeout_s=LIMIT_S), gpu=False)
    started = time.monotonic()
    try:
        executor.submit("lenet5/baseline/seed0", hang_forever, str(tmp_path / "forever.log"))
        executor.submit("lenet5/flip/seed0", hang_once, str(tmp_path / "once"))
        executor.submit("lenet5/crop/seed0", count_and_finish, str(tmp_path / "finished.log"))
        done = {}
        while executor.pending():
            d = executor.next_done()
            done[d.key] = d
    finally:
        executor.close()
    assert time.monotonic() - started < 300  # ended; without the limit this never returns
    hung = done["lenet5/baseline/seed0"]
    assert not hung.ok
    assert "run lenet5/baseline/seed0 ran past executor.run_timeout_s (2 s)" in hung.error, hung.error
    assert "given up after 2 attempt(s)" in hung.error, hung.error
    assert (tmp_path / "forever.log").read_text() == "started\n" * 2  # retried once: max_retries 1
    assert done["lenet5/flip/seed0"].result == "finished on its retry"
    assert done["lenet5/crop/seed0"].result == "finished"
    assert "ran past executor.run_timeout_s (2 s)" in capfd.readouterr().err


@pytest.mark.parametrize("value", [0, -1, "6h", True, 1e9])
def test_an_invalid_run_timeout_is_a_config_error_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"executor\.run_timeout_s"):
        parse(small_params(executor__run_timeout_s=value))


def test_run_timeout_defaults_to_hours_and_null_means_none():
    assert parse(small_params()).executor.run_timeout_s >= 3600
    assert parse(small_params(executor__run_timeout_s=None)).executor.run_timeout_s is None
    assert parse(small_params(executor__run_timeout_s=30)).executor.run_timeout_s == 30
