"""Where studies live, and the locks around them. A path is an Optuna journal file: appends under a file
lock (FlockLock), so a killed process never corrupts it and workers on one machine share it; a torn last
line is cut off before the next append. A URL (postgresql://..., sqlite:///...) is an RDB storage with
heartbeats, for workers on several machines. Which coordinator owns a running trial (host/pid@start) is
how a trial left by a dead one is recognised."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import optuna

from cifarbench.errors import CifarbenchError
from cifarbench.io import flock_by, locked, user_cache
from cifarbench.redact import mask_credentials
from cifarbench.paths import in_repository
from cifarbench.processes import alive, me
from cifarbench.tuning.config import TuneConfig

ENV_STORAGE = "CIFARBENCH_OPTUNA_STORAGE"
MAX_RETRIES = 2  # a trial whose process keeps dying (out of memory, say) is then given up
SQLITE = "sqlite:///"
LOCK_TIMEOUT_S = 120.0  # a journal append takes milliseconds; a holder this slow is hung, not busy


def storage_url(cfg: TuneConfig) -> str:
    """CIFARBENCH_OPTUNA_STORAGE or tune.storage; a journal path made absolute (workers run elsewhere) against
    the repository (paths.in_repository: a DVC experiment's temporary copy writes to the user's journal)."""
    url = os.environ.get(ENV_STORAGE) or cfg.storage
    if url.startswith(SQLITE):  # an RDB file: the same rule
        return SQLITE + str(in_repository(url[len(SQLITE):]))
    return url if "://" in url else os.path.normpath(in_repository(url))


def shown(url: str) -> str:
    """The storage as it may be logged or recorded: an RDB URL's password hidden."""
    return mask_credentials(url)


def open_storage(url: str, cfg: TuneConfig) -> optuna.storages.BaseStorage:
    if "://" in url:
        from sqlalchemy.exc import OperationalError

        try:
            return _rdb_storage(url, cfg)
        except OperationalError as exc:  # refused, unknown host, bad password, no such database
            why = str(exc.orig or exc).strip().splitlines()[0]
            raise CifarbenchError(f"the Optuna storage {shown(url)} could not be opened ({mask_credentials(why)}): "
                                  f"start the database server, or point {ENV_STORAGE} (or params.yaml tune.storage) "
                                  "at one that runs") from exc
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    check_is_journal(Path(url))
    try:
        return journal_storage(url)
    except ValueError as exc:  # json.JSONDecodeError, or Optuna's "Invalid log format."
        raise CifarbenchError(f"{url}: the Optuna journal is damaged inside ({exc}). Move it aside (`mv {url} "
                              f"{url}.broken`) and run again: the studies start over") from exc


def journal_storage(path: str) -> optuna.storages.JournalStorage:
    """The journal file at `path` with cifarbench's lock (FlockLock), for any tool that opens it while studies
    may run, e.g. Optuna's dashboard (`pip install optuna-dashboard`), from the repository root:

        python -c "from optuna_dashboard import run_server; from cifarbench.tuning import journal_storage; run_server(journal_storage('optuna/studies.journal'))"

    Reads the whole journal (a damaged one raises ValueError)."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path, FlockLock(f"{path}.lock")))


@contextlib.contextmanager
def heartbeat(trial_id: int, storage: optuna.storages.BaseStorage):
    """While the block runs, the trial's heartbeat is recorded every heartbeat interval of an RDB storage
    opened with one (fail_stale_trials then leaves the trial alone; silent for the grace period, it is failed
    and queued again). What Study.optimize does for its own trials, which ask/tell does not; built on
    RDBStorage's public heartbeat methods, not Optuna's private `_heartbeat` module. A journal has no
    heartbeats (a dead coordinator's trials are found by their owner, is_dead)."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _rdb_storage(url: str, cfg: TuneConfig, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage; a trial whose heartbeat stopped is failed and queued again (Optuna's own callback).
    Coordinators that open a new, empty database at once race in Optuna's schema creation (measured on
    PostgreSQL: the loser fails on a duplicate `alembic_version` table), and no lock spans machines: the
    loser tries again once the winner has made the schema."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def storage() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(url, heartbeat_interval=cfg.heartbeat_s, grace_period=3 * cfg.heartbeat_s,
                                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                                              max_retry=MAX_RETRIES))

    for attempt in range(attempts - 1):
        with contextlib.suppress(IntegrityError, ProgrammingError):  # a duplicate table, type or version row
            return storage()
        time.sleep(0.5 * (attempt + 1))
    return storage()


class FlockLock:
    """The journal's write lock (Optuna's BaseJournalFileLock interface) as an fcntl lock, which the kernel
    releases when its holder dies: Optuna's default symlink lock, left behind by a SIGKILL mid-write,
    blocked every later writer (Optuna 5.0: its stale-lock timeout never fires). The holder writes its
    host/pid into the lock file, so a wait that times out can name it. Before each append the journal's
    torn last line, if any, is cut off (repair_journal)."""

    def __init__(self, path: str, timeout_s: float = LOCK_TIMEOUT_S, repair: bool = True):
        self.path, self.fd, self.timeout_s, self.repair = path, -1, timeout_s, repair

    def acquire(self) -> bool:
        deadline = time.monotonic() + self.timeout_s
        fd = self._open(deadline)
        holder = flock_by(fd, deadline)
        if holder is not None:
            os.close(fd)
            raise CifarbenchError(
                f"{self.path}: the Optuna journal's lock was held for more than {self.timeout_s:.0f} s "
                f"(by {holder or 'unknown'}, host/pid). If that process hangs, stop it (its lock goes with it) and "
                "run again") from None
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, me().encode(), 0)
        if self.repair and self.path.endswith(".lock"):
            try:
                _cut_torn_line(Path(self.path.removesuffix(".lock")))
            except BaseException:  # not a journal: refused, and the lock not kept (Optuna releases only what it got)
                self.release()
                raise
        return True

    def _open(self, deadline: float) -> int:
        """The lock file, never through a symbolic link: Optuna's default journal lock is the link
        `<journal>.lock` -> `<journal>` (made by a process that opens the journal without this lock, such as
        `optuna-dashboard <journal>` saving a note), and opening it here would truncate the journal itself.
        Such a link is removed when its writer is done: wait for that."""
        while True:
            try:
                return os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                if time.monotonic() > deadline:
                    raise CifarbenchError(
                        f"{self.path} is a symbolic link, Optuna's default journal lock, held for more than "
                        f"{self.timeout_s:.0f} s by a process that opened the journal without cifarbench's lock "
                        "(optuna-dashboard given the journal's path, or a script of your own), or left by one that "
                        f"died. Stop that process, or, if none runs, remove the link (`rm {self.path}`), and run "
                        "again") from None
                time.sleep(0.05)

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)  # closing drops the lock


SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
RECORD_START = b'{"op_code":'  # how Optuna's JournalFileBackend writes every line (json.dumps of {"op_code": ...})


def not_a_journal(path: Path) -> str | None:
    """Why the file at `path` is not an Optuna journal (None if it reads as one, torn last line and all): a
    SQLite database (an MLflow store, an Optuna sqlite:/// file), or a first line that is not Optuna's record.
    Reads only the first line."""
    with open(path, "rb") as f:
        head = f.readline(1 << 16)
    if head.startswith(SQLITE_MAGIC):
        return "a SQLite database (an MLflow store, or an Optuna storage to give as sqlite:///PATH)"
    torn_first = not head.endswith(b"\n") and RECORD_START.startswith(head)  # a kill during the first append
    if head and not head.startswith(RECORD_START) and not torn_first:
        return f"its first line is not one of Optuna's journal records ({{\"op_code\": ...}}): {head[:40]!r}"
    return None


def check_is_journal(path: Path) -> None:
    """A folder, or a file that is not an Optuna journal, given as the journal, is a CifarbenchError naming it
    and the fix; the file is not touched."""
    if path.is_dir():
        raise CifarbenchError(f"{path} is a folder, not an Optuna journal: point params.yaml tune.storage (or "
                              f"{ENV_STORAGE}) at a journal file in it, e.g. {path / 'studies.journal'}")
    if path.is_file() and (why := not_a_journal(path)) is not None:
        raise CifarbenchError(f"{path} is not an Optuna journal: it is {why}. Nothing in it was changed; point "
                              f"params.yaml tune.storage (or {ENV_STORAGE}) at the journal file "
                              "(optuna/studies.journal by default) or at the database's URL")


def damaged_line(path: Path) -> int | None:
    """The number of the first whole line of the journal at `path` that is not a JSON record of Optuna's,
    None if all are (a torn last line, without its newline, is not judged)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return None
            try:
                record = json.loads(line)
            except ValueError:
                return number
            if not isinstance(record, dict) or "op_code" not in record:
                return number
    return None


def repair_journal(url: str) -> str | None:
    """Cut off the torn last line of a journal file, under its lock; returns what was done, or None. A folder,
    a file that is not a journal, or a journal damaged before its last line is a CifarbenchError, and nothing
    is changed."""
    if "://" in url:
        return None
    path = Path(url)
    check_is_journal(path)
    if not path.is_file():
        return None
    if (number := damaged_line(path)) is not None:
        raise CifarbenchError(f"{path}: the Optuna journal is damaged inside (line {number} is not one of its JSON "
                              f"records); doctor changed nothing. Move it aside (`mv {path} {path}.broken`) and "
                              "run again: the studies start over")
    lock = FlockLock(f"{url}.lock", repair=False)
    lock.acquire()
    try:
        return _cut_torn_line(path)
    finally:
        lock.release()


def _cut_torn_line(path: Path) -> str | None:
    """A journal's last line cut short (disk full or a kill mid-append) is tolerated by Optuna only until
    the next append lands behind it; then every read raises. Cut it off, keeping the whole file as
    `<journal>.torn-<time>`. The caller holds the journal's lock. A file that is not a journal is refused
    (check_is_journal), never cut."""
    if not path.is_file():
        return None
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0 or os.pread(f.fileno(), 1, size - 1) == b"\n":
            return None
        check_is_journal(path)
        start = max(0, size - (1 << 20))  # journal lines are a few hundred bytes
        tail = os.pread(f.fileno(), size - start, start)
        keep = start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, aside)
        f.truncate(keep)
    message = (f"{path}: its last line was cut short ({size - keep} bytes: a write interrupted, e.g. disk full); "
               f"cut off, the whole file kept as {aside}")
    print(f"warning: {message}", file=sys.stderr, flush=True)
    return message


def machine_lock(url: str, study: str, timeout_s: float = LOCK_TIMEOUT_S):
    """A lock shared by this machine's coordinators of one study (released if the holder dies, removed by
    it when done). Held across storage and MLflow calls (seconds); a wait past `timeout_s` is a
    CifarbenchError naming the lock file and its holder. Its file lives with the project's state, beside a
    journal; for an RDB URL in the user's own cache folder: never a predictable name in the shared temp
    folder, which another user could create first and so block every `cifarbench tune` here."""
    key = hashlib.sha256(f"{url}|{study}".encode()).hexdigest()[:16]
    folder = Path(url).parent if "://" not in url else user_cache() / "locks"
    return locked(folder / f".cifarbench-tune-{key}.lock", timeout_s, f"the study {study} in {shown(url)}")


def is_dead(owner: str | None, journal: bool) -> bool:
    """Whether the coordinator that asked a trial is gone. A journal serves one machine, so a trial of
    another host there is a previous life of this one (a container restarted under a new hostname)."""
    if owner is None:  # killed between ask and tagging, both done under the lock (one machine: journal)
        return journal
    running = alive(owner)
    return journal if running is None else not running
