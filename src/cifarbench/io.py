"""Atomic writes: every output goes to a temporary name in the same folder, then is renamed into place,
so an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    `suffix` is kept at the end of the temporary name for writers that insist on an extension (np.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path | str, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: Path | str):
    return json.loads(Path(path).read_text())


def remove_stale_temps(path: Path | str) -> list[Path]:
    """Remove `atomic_path` temporaries of `path` left by a killed process (its pid no longer runs); returns
    them. A temporary of a live process (a download running in another shell) is left alone."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.tmp.*")
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp*") if path.parent.is_dir() else []:
        match = pattern.fullmatch(tmp.name)
        if match and tmp.is_file() and not pid_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
