"""Where runs are stored: the tracking URI, a local SQLite store made whole or refused, a server's
bounded waits and its error when it cannot be reached, and the experiment."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import uuid
from pathlib import Path

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError
from cifarbench.io import remove_stale_temps
from cifarbench.redact import mask_credentials
from cifarbench.paths import in_repository

SQLITE = "sqlite:///"

# Bounded waits for a tracking server (MLflow's defaults: 120 s per request, 7 retries with backoff, so
# a server that is down looked like a hung run for minutes per call). Set unless the user set them.
# Worst case per call, a server that accepts and never answers: 3 tries x 20 s + backoff 0 + 2 s + jitter
# (<= 1 s each) ~ 64 s; a refused connection fails in ~3 s (the backoff only).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def tracking_uri(cfg: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI wins over params.yaml `tracking.uri`. A relative SQLite path is made absolute
    against the repository (paths.in_repository: the working directory, the repo root for stages, or the
    repository a DVC experiment's temporary copy was made from): MLflow caches stores by URI string, so
    `sqlite:///mlflow.db` would otherwise keep pointing at the first folder a process used it in."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    if uri.startswith(SQLITE):
        uri = SQLITE + str(in_repository(uri[len(SQLITE):]))
    return uri


def client(uri: str):
    """An MlflowClient on `uri` with bounded waits. Client API only: the fluent API's global state (and
    the MLFLOW_TRACKING_URI it sets) would leak between the runs one worker process executes."""
    from mlflow.tracking import MlflowClient

    bound_http_waits()
    return MlflowClient(uri)


def open_experiment(uri: str, name: str) -> str:
    """Create the store and the experiment `name` if missing; returns the experiment's id. Done once,
    before any run fans out (several processes creating one SQLite store at once crash in its schema
    migrations)."""
    bound_http_waits()
    create_sqlite_store(uri)
    store = client(uri)
    try:
        experiment = store.get_experiment_by_name(name)
    except Exception as exc:
        if unreachable(exc):
            raise CifarbenchError(unreachable_message(uri)) from exc
        raise
    if experiment is None:
        try:
            return store.create_experiment(name, _artifacts_beside(uri))
        except Exception:  # another process created it meanwhile
            experiment = store.get_experiment_by_name(name)
    return experiment.experiment_id


def bound_http_waits() -> None:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def unreachable_message(uri: str) -> str:
    waits = ", ".join(f"{key}={os.environ.get(key, value)}" for key, value in HTTP_DEFAULTS.items())
    return (f"the MLflow tracking server {mask_credentials(uri)} could not be reached (refused, or no answer within the waits "
            f"{waits}): start the server, or point MLFLOW_TRACKING_URI (or params.yaml tracking.uri) at one "
            "that runs")


def unreachable(exc: BaseException | None) -> bool:
    """Whether an MLflow error was caused by a server that refused, timed out or kept failing (requests'
    ConnectionError, Timeout or RetryError anywhere in the chain; MLflow chains some only as __context__)."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _artifacts_beside(uri: str) -> str | None:
    """A local SQLite store's artifacts in `mlruns/` beside it. MLflow's default is ./mlruns of whichever
    process creates the experiment first, and every later run's artifacts follow (for the nightly's
    worktree, a folder rebuilt at will). A server or a shared database keeps its own artifact root."""
    return (Path(uri[len(SQLITE):]).parent / "mlruns").as_uri() if uri.startswith(SQLITE) else None


def create_sqlite_store(uri: str) -> None:
    """Create a local SQLite store out of place and move it in whole: a process killed during MLflow's
    schema migrations (~1 s) used to leave a half-made mlflow.db that every later run failed on. An
    existing store is checked instead (check_sqlite_store)."""
    if not uri.startswith(SQLITE):
        return
    path = Path(uri[len(SQLITE):])
    if path.exists():
        check_sqlite_store(uri)
        return
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # stores half-made by killed processes
    # pid: a killed creator's leftover is recognised as stale; uuid: MLflow caches stores by URI
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{uuid.uuid4().hex}")
    try:
        MlflowClient(SQLITE + str(tmp)).search_experiments()  # runs the migrations
        _dispose_engines()
        if not path.exists():
            os.replace(tmp, path)
    except Exception as exc:
        if _disk_full(exc):
            raise CifarbenchError(f"disk full (or failing) while creating the MLflow store {path} in {path.parent}: "
                                  "free space there and run again") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def check_sqlite_store(uri: str) -> None:
    """Raise naming the file if a local SQLite store is not a whole MLflow store: one left half-made by a
    process killed during MLflow's schema migrations (older cifarbench, or another tool), or not SQLite."""
    path = Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None
    if path is None or not path.is_file():
        return
    try:
        # Read-write, as MLflow opens it: a store killed mid-write has a hot rollback journal, which opening
        # rolls back; a read-only open cannot and fails ('attempt to write a readonly database'). A select
        # writes nothing else, so a file that is not SQLite is left as it was.
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as exc:
        tables, why = None, f"is not a readable SQLite database ({exc})"
    if tables is not None:
        temporary = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        why = (f"was left half-made by a process killed during MLflow's schema migrations (table {temporary[0]})"
               if temporary else "has no alembic_version table: it is not a complete MLflow store"
               if tables and "alembic_version" not in tables else None)
    if why:
        raise CifarbenchError(f"the MLflow store {path} {why}. Move it aside (`mv {path} {path}.broken`) and "
                              "run again: a fresh store is created; the runs in the old file stay there, not shown "
                              "(finished cells are not trained again)")


def _disk_full(exc: BaseException) -> bool:
    """Whether an error (or its cause) is a full disk or a file-size limit (SQLite: 'database or disk is full')."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return True
        if any(what in str(exc) for what in ("disk is full", "disk I/O error", "File too large")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _dispose_engines() -> None:
    """Close MLflow's cached SQLAlchemy engines (they hold the temporary store's file open)."""
    with contextlib.suppress(Exception):
        from mlflow.store.db import utils

        for engine in getattr(utils, "_engine_cache", {}).values():
            engine.dispose()
