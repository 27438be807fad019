"""Atomic writes: every output goes to a temporary name in the same folder, flushed to disk, then is renamed
into place, so an interrupted run (or a power cut) never leaves a file that looks complete. And the checked
read of a JSON file a run wrote: a damaged one is named, never a traceback."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cifarbench.errors import CifarbenchError


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
        _fsync(tmp)  # without it a power cut soon after the rename can leave `path` empty (ext4, xfs)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself; best effort (some filesystems refuse a folder's fsync)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def write_json_atomic(path: Path | str, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: Path | str):
    return json.loads(Path(path).read_text())


class DamagedFile(ValueError):
    """A file a run wrote that cannot be used: empty, cut short, not JSON, or not the shape expected."""


def read_checked_json(path: Path | str, why_bad: Callable[[object], str | None] = lambda v: None):
    """The JSON object in `path`; DamagedFile saying what is wrong with it (empty, cut short, not an object,
    or `why_bad(value)`: a reason, None when the content is fine). OSError if it cannot be read at all."""
    text = Path(path).read_bytes()
    if not text.strip():
        raise DamagedFile(f"{path} is empty")
    try:
        value = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedFile(f"{path} is not valid JSON (cut short?): {exc}") from None
    reason = "holds a JSON " + type(value).__name__ + ", not an object" if not isinstance(value, dict) else why_bad(value)
    if reason:
        raise DamagedFile(f"{path} {reason}")
    return value


@contextlib.contextmanager
def locked(path: Path | str, timeout_s: float, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (an fcntl lock: the kernel drops it when its holder dies)
    while inside; its holder's host/pid is written into it, and the holder removes it on the way out (none
    pile up). Waiting more than `timeout_s` raises a CifarbenchError naming `what` is locked, the file and
    its holder. The file is private to its user (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            _flock_until(fd, deadline, path, timeout_s, what)
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # still the file at `path`: the lock is ours
        os.close(fd)  # its holder removed it while we waited: lock the file there now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()}/{os.getpid()}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the lock drops, so a waiter that wins it sees it is gone and starts over
        os.close(fd)


def _flock_until(fd: int, deadline: float, path: Path, timeout_s: float, what: str) -> None:
    holder = flock_by(fd, deadline)
    if holder is not None:
        raise CifarbenchError(
            f"{what} stayed locked for more than {timeout_s:.0f} s by {holder or 'an unknown process'} (host/pid; "
            f"lock file {path}). If that process hangs or is stopped (Ctrl-Z), end it (its lock goes with it) and "
            "run again") from None


def flock_by(fd: int, deadline: float) -> str | None:
    """Take an exclusive fcntl lock on `fd`, polling until `deadline` (time.monotonic()): None once it is held,
    else what its holder wrote into the file (its host/pid; "" when nothing)."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            if time.monotonic() > deadline:
                return os.pread(fd, 200, 0).decode(errors="replace").strip()
            time.sleep(0.05)


def user_cache() -> Path:
    """This user's cifarbench folder for machine-wide state (the fast-path cache, lock files):
    $XDG_CACHE_HOME/cifarbench, else ~/.cache/cifarbench."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "cifarbench"


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
