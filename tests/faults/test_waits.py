"""Probes: waits that used to have no end. tune's machine lock (one study's asks and budget checks,
serialized between the coordinators of one machine) held by a process that hangs or was stopped with
Ctrl-Z, and the place of its file.

Required: the wait ends after its timeout with a CifarbenchError naming the lock file and the holder's
host/pid; the file is the user's own (never a predictable name in the shared temp folder) and is removed
by its holder when done.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cifarbench.errors import CifarbenchError
from cifarbench.tuning.storage import machine_lock

pytestmark = pytest.mark.faults

HOLD = """
    import sys, time
    from cifarbench.tuning.storage import machine_lock
    with machine_lock(sys.argv[1], "tune-lenet5"):
        print("held", flush=True)
        time.sleep(60)
"""


def lock_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".cifarbench-tune-*.lock")) if folder.is_dir() else []


@pytest.mark.parametrize("kind", ["journal", "rdb"])
def test_a_held_machine_lock_times_out_naming_its_file_and_holder(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the child inherits it
    journal = tmp_path / "optuna" / "studies.journal"
    url = str(journal) if kind == "journal" else "postgresql://bench:s3cret@127.0.0.1:9/optuna"
    folder = journal.parent if kind == "journal" else tmp_path / "cache" / "cifarbench" / "locks"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD), url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        [lock] = lock_files(folder)  # with the project's state, or in the user's own cache folder
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        started = time.monotonic()
        with pytest.raises(CifarbenchError) as caught:
            with machine_lock(url, "tune-lenet5", timeout_s=0.5):
                pass
        assert time.monotonic() - started < 10
        message = str(caught.value)
        assert str(lock) in message and f"{socket.gethostname()}/{holder.pid}" in message, message
        assert "tune-lenet5" in message and "s3cret" not in message, message
    finally:
        holder.kill()
        holder.wait()
    with machine_lock(url, "tune-lenet5", timeout_s=5):  # the holder died: its lock went with it
        assert len(lock_files(folder)) == 1
    assert lock_files(folder) == []  # removed by its holder: none pile up


WAIT_AND_COUNT = """
    import sys, time
    from pathlib import Path
    from cifarbench.io import locked  # machine_lock's (and the fast-path cache's) lock
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(int(sys.argv[3])):
        with locked(sys.argv[1], 60, "the counter"):
            counter = Path(sys.argv[2])
            n = int(counter.read_text() or 0)
            time.sleep(0.001)
            counter.write_text(str(n + 1))
"""


def test_the_lock_still_excludes_while_its_file_comes_and_goes(tmp_path):
    """Removing the file on release must not let two processes in at once (a waiter on the removed file
    starts over): three processes incrementing one counter under the lock lose no increment."""
    lock, counter, n = tmp_path / ".counter.lock", tmp_path / "counter", 100
    counter.write_text("0")
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WAIT_AND_COUNT), str(lock), str(counter), str(n)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0]
    assert int(counter.read_text()) == 3 * n
    assert not lock.exists()
