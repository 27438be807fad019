"""cifarbench.forked: seeds side by side in forked 1-thread processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from cifarbench.forked import ChildFailed, map_forked, side_by_side


def _square(item, report):
    report({"pid": os.getpid(), "threads": torch.get_num_threads()})
    report(item * 10)
    return item * item


def test_results_come_back_in_order_from_one_thread_children():
    reports = []
    results = map_forked(_square, [3, 1, 2], processes=2, on_report=lambda item, p: reports.append((item, p)))
    assert results == [9, 1, 4]
    infos = [p for _, p in reports if isinstance(p, dict)]
    assert len(infos) == 3 and all(i["threads"] == 1 and i["pid"] != os.getpid() for i in infos)
    assert len({i["pid"] for i in infos}) == 3
    assert sorted((item, p) for item, p in reports if isinstance(p, int)) == [(1, 10), (2, 20), (3, 30)]


def test_one_process_runs_here_in_order():
    reports = []
    assert map_forked(_square, [2, 3], processes=1, on_report=lambda item, p: reports.append(p)) == [4, 9]
    assert reports[0]["pid"] == os.getpid() and reports[1] == 20 and reports[3] == 30


def _fails_on_two(item, report):
    report(None)
    if item == 2:
        raise ValueError("seed 2 is cursed")
    return item


def test_a_child_exception_is_raised_here_with_its_traceback():
    with pytest.raises(ChildFailed, match=r"(?s)2 failed in its process.*ValueError: seed 2 is cursed"):
        map_forked(_fails_on_two, [1, 2], processes=2)


def _dies(item, report):
    report(None)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_killed_without_a_result_is_an_error_naming_it():
    with pytest.raises(ChildFailed, match=r"process for 7 died without a result \(exit code -9\); rerun to resume"):
        map_forked(_dies, [7, 8], processes=2)


def test_side_by_side_only_where_cores_are_few():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert side_by_side([0, 1]) == 2 and side_by_side([0]) == 1 and side_by_side([0, 1, 2]) == 2
        torch.set_num_threads(1)
        assert side_by_side([0, 1]) == 1
        torch.set_num_threads(4)
        assert side_by_side([0, 1]) == 1 and side_by_side([0, 1, 2]) == 3
    finally:
        torch.set_num_threads(threads)


def test_children_die_with_a_killed_parent(tmp_path):
    """A stage killed by DVC (or the warm worker) must not leave seeds training on as orphans."""
    script = textwrap.dedent("""
        import sys, time
        from cifarbench.forked import map_forked

        def sleeper(item, report):
            import os
            report(os.getpid())
            time.sleep(120)

        map_forked(sleeper, [0, 1], processes=2, on_report=lambda item, pid: print(pid, flush=True))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(parent.stdout.readline()) for _ in range(2)]
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
