"""Which process owns a piece of state, and whether it is still alive: `host/pid@start-time`, written by
the owner (`me()`) and checked by whoever finds the state later (`alive`). The start time (from /proc)
keeps a reused pid from passing for the original process. Used for Optuna trials (cifarbench.tuning) and
MLflow training runs (cifarbench.tracking) that a killed process left running."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from cifarbench.io import pid_alive


def process_id(pid: int) -> str | None:
    """`pid@start time` of a live process (None if it is gone), so a reused pid is not taken for the
    original process; just the pid where there is no /proc."""
    if Path("/proc").is_dir():
        with contextlib.suppress(OSError):
            return f"{pid}@{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"  # field 22
        return None
    return str(pid) if pid_alive(pid) else None


def me() -> str:
    """This process, as its owned state names it."""
    return f"{socket.gethostname()}/{process_id(os.getpid())}"


def alive(owner: str) -> bool | None:
    """Whether the process `owner` (written by `me()`) still runs; None when it ran on another host (this
    one cannot tell)."""
    host, _, process = owner.partition("/")
    if host != socket.gethostname():
        return None
    try:
        return process_id(int(process.split("@")[0])) == process
    except ValueError:  # not written by me(): nothing that runs
        return False
