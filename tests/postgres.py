"""A real PostgreSQL server for tests: a throwaway cluster in a temp folder on a free 127.0.0.1 port,
trust authentication on loopback, started and stopped by the session fixture `postgres`.

`initdb` and `pg_ctl` refuse to run as root: as root the cluster runs as the `postgres` user (Debian's
package makes it) or, where there is none, a system user made here; the tests are skipped, saying why,
when PostgreSQL's binaries are missing or no unprivileged user can be had.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "cifarbench"  # the cluster's superuser
PASSWORD = "s3cret-pw"  # ignored (trust auth); in the URLs so that tests can check it is never shown
BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")
FALLBACK_OS_USER = "cifarbench-pg"


@dataclass(frozen=True)
class Postgres:
    folder: Path  # the cluster's data folder is folder/data
    port: int
    bin: Path
    os_user: str | None  # runuser -u this (None: we are not root)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.os_user:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def server_pids(self) -> list[int]:
        """Every live process of this cluster (postmaster and its children: their command line or
        working folder names the data folder, or their parent is the postmaster)."""
        data = str(self.folder / "data")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if data in cmdline or cwd == data:
                pids.append(int(entry.name))
        return pids


def _find_bin() -> Path | None:
    for folder in BIN_DIRS:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _os_user() -> str | None:
    """Who runs the cluster: None when we are not root; else `postgres`, or a system user made now."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                           FALLBACK_OS_USER], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"PostgreSQL refuses root and no unprivileged user could be made: {made.stderr.strip()}")
    return FALLBACK_OS_USER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running PostgreSQL with databases `mlflow` and `optuna`; stopped (no process left) at the end."""
    pytest.importorskip("psycopg", reason="psycopg 3 (PostgreSQL driver) is not installed")
    bin_dir = _find_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL's initdb/pg_ctl not found (looked in {', '.join(BIN_DIRS)} and PATH)")
    os_user = _os_user()
    # Not under pytest's tmp_path: that is private to root (0700), and the server runs as another user.
    folder = Path(tempfile.mkdtemp(prefix="cifarbench-pg-"))
    server = Postgres(folder, _free_port(), bin_dir, os_user)
    if os_user:
        shutil.chown(folder, os_user)
    data = folder / "data"
    started = False
    try:
        server.pg("initdb", "-D", str(data), "-U", USER, "--auth-host=trust", "--auth-local=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        # No Unix socket (only loopback TCP); durability off: a test cluster, thrown away after.
        options = (f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = True  # from here on, stop it whatever happens
        server.pg("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start")
        for name in ("mlflow", "optuna"):
            server.create_database(name)
        yield server
    finally:
        if started:
            server.pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop", check=False)
            deadline = time.monotonic() + 30
            while server.server_pids() and time.monotonic() < deadline:
                time.sleep(0.2)
            left = server.server_pids()
            for pid in left:  # a server that ignored the stop: the test fails, but no process outlives it
                os.kill(pid, 9)
            assert not left, f"PostgreSQL processes left after pg_ctl stop: {left}"
        shutil.rmtree(folder, ignore_errors=True)
