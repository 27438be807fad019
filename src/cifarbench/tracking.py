"""The one module that talks to MLflow.

Every training run is an MLflow run named `<arch>/<ablation>/seed<k>` in the pipeline's experiment, with
the flattened cell config as params, provenance and identity as tags, per-epoch metrics with their epoch
as step, final test metrics, system metrics and artifacts.

Reruns: a run is tagged `cifarbench.current=true` only once it has finished, and at that moment the
earlier runs of the same (preset, arch, ablation, seed) are re-tagged `cifarbench.current=false`
(kept for history, never deleted). The report reads current runs only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import platform
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError
from cifarbench.io import remove_stale_temps

CURRENT = "cifarbench.current"
IDENTITY = ("preset", "arch", "ablation", "seed")  # tags that name one run of the benchmark
SYSTEM_METRICS_INTERVAL_S = 2  # MLflow's default (10 s) would miss most of a short CPU run


def tracking_uri(cfg: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI wins over params.yaml `tracking.uri`. A relative SQLite path is made absolute
    (against the working directory, the repo root for stages): MLflow caches stores by URI string, so
    `sqlite:///mlflow.db` would otherwise keep pointing at the first folder a process used it in."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix):]).is_absolute():
        uri = prefix + str(Path.cwd() / uri[len(prefix):])
    return uri


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def provenance() -> dict[str, str]:
    """Where a result came from: code version, DVC stage, library versions, machine."""
    import mlflow
    import torch

    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": platform.python_version(),
        "host_cpu": cpu_model(),
        "host_gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "host_cores": str(os.cpu_count()),
    }


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), so throughput is compared only on like hardware."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Bounded waits for a tracking server (MLflow's defaults: 120 s per request, 7 retries with backoff, so
# a server that is down looked like a hung run for minutes per call). Set unless the user set them.
# Worst case per call, a server that accepts and never answers: 3 tries x 20 s + backoff 0 + 2 s + jitter
# (<= 1 s each) ~ 64 s; a refused connection fails in ~3 s (the backoff only).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def bound_http_waits() -> None:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def unreachable_message(uri: str) -> str:
    waits = ", ".join(f"{key}={os.environ.get(key, value)}" for key, value in HTTP_DEFAULTS.items())
    return (f"the MLflow tracking server {uri} could not be reached (refused, or no answer within the waits "
            f"{waits}): start the server, or point MLFLOW_TRACKING_URI (or params.yaml tracking.uri) at one "
            "that runs")


def _unreachable(exc: BaseException | None) -> bool:
    """Whether an MLflow error was caused by a server that refused, timed out or kept failing (requests'
    ConnectionError, Timeout or RetryError anywhere in the chain; MLflow chains some only as __context__)."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(frozen=True)
class Tracker:
    """Where runs go: a resolved tracking URI and an experiment that exists. Made once by the coordinator
    (`Tracker.open`), then handed to every run (it pickles: Ray nodes and worker processes get it whole)."""

    uri: str
    experiment: str
    experiment_id: str

    @classmethod
    def open(cls, cfg: TrackingConfig) -> Tracker:
        """Resolve the URI and create the store and the experiment, once, before any run fans out (several
        processes creating one SQLite store at once crash in its schema migrations)."""
        from mlflow.tracking import MlflowClient

        bound_http_waits()
        uri = tracking_uri(cfg)
        create_sqlite_store(uri)
        client = MlflowClient(uri)
        try:
            experiment = client.get_experiment_by_name(cfg.experiment)
        except Exception as exc:
            if _unreachable(exc):
                raise CifarbenchError(unreachable_message(uri)) from exc
            raise
        if experiment is None:
            try:
                return cls(uri, cfg.experiment, client.create_experiment(cfg.experiment, _artifacts_beside(uri)))
            except Exception:  # another process created it meanwhile
                experiment = client.get_experiment_by_name(cfg.experiment)
        return cls(uri, cfg.experiment, experiment.experiment_id)

    def client(self):
        from mlflow.tracking import MlflowClient

        bound_http_waits()
        return MlflowClient(self.uri)

    @contextlib.contextmanager
    def training_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                     resume_run_id: str | None = None, id_file: Path | None = None) -> Iterator[RunLog]:
        """Start (or, after a killed process, resume) the MLflow run `name`; ends it FINISHED or FAILED.
        A new run's id goes to `id_file` as soon as the run exists, so a process killed from then on is
        resumed in this run (not left RUNNING beside a second one). Client API only: the fluent API's
        global state (and the MLFLOW_TRACKING_URI it sets) would leak between the runs one worker process
        executes."""
        from mlflow.entities import Param
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
        client = self.client()
        if resume_run_id and _run_exists(client, resume_run_id, self.experiment_id):
            run_id = resume_run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(self.experiment_id, run_name=name, tags={**tags, CURRENT: "false"}).info.run_id
            if id_file is not None:
                id_file.write_text(run_id)
        flat = [Param(k, _param(v)) for k, v in flatten(params).items()]
        for start in range(0, len(flat), 100):  # at most 100 per batch; logged again on resume (a kill may have
            client.log_batch(run_id, params=flat[start:start + 100])  # cut them short; same values are allowed)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       resume_logging=run_id == resume_run_id, tracking_uri=self.uri)
        monitor.start()
        status = "FAILED"
        try:
            yield RunLog(client, run_id, self.experiment_id, {k: str(tags[k]) for k in IDENTITY})
            status = "FINISHED"
        finally:
            monitor.finish()
            try:
                client.set_terminated(run_id, status)
            except Exception as exc:  # the server went away mid-run: say so, not MLflow's retry trace
                if _unreachable(exc):
                    raise CifarbenchError(f"{unreachable_message(self.uri)}. Run {run_id} stays RUNNING; its "
                                          "checkpoint is kept and a rerun resumes it") from exc
                raise

    def end_killed(self, run_ids: list[str]) -> None:
        """Mark runs that were still RUNNING when their workers were stopped as KILLED."""
        client = self.client()
        for run_id in run_ids:
            with contextlib.suppress(Exception):  # a run deleted meanwhile, or a server gone: nothing to end
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "KILLED")


def _artifacts_beside(uri: str) -> str | None:
    """A local SQLite store's artifacts in `mlruns/` beside it. MLflow's default is ./mlruns of whichever
    process creates the experiment first, and every later run's artifacts follow (for the nightly's
    worktree, a folder rebuilt at will). A server or a shared database keeps its own artifact root."""
    prefix = "sqlite:///"
    return (Path(uri[len(prefix):]).parent / "mlruns").as_uri() if uri.startswith(prefix) else None


def create_sqlite_store(uri: str) -> None:
    """Create a local SQLite store out of place and move it in whole: a process killed during MLflow's
    schema migrations (~1 s) used to leave a half-made mlflow.db that every later run failed on. An
    existing store is checked instead (check_sqlite_store)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    path = Path(uri[len(prefix):])
    if path.exists():
        check_sqlite_store(uri)
        return
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # stores half-made by killed processes
    # pid: a killed creator's leftover is recognised as stale; uuid: MLflow caches stores by URI
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{uuid.uuid4().hex}")
    try:
        MlflowClient(prefix + str(tmp)).search_experiments()  # runs the migrations
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
    prefix = "sqlite:///"
    path = Path(uri[len(prefix):]) if uri.startswith(prefix) else None
    if path is None or not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
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


class RunLog:
    """A started MLflow run of one (arch, ablation, seed)."""

    def __init__(self, client, run_id: str, experiment_id: str, identity: Mapping[str, str]):
        self.client, self.run_id, self.experiment_id, self.identity = client, run_id, experiment_id, identity

    def log_epoch(self, record: Mapping[str, float], epoch: int) -> None:
        self._metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    def log_final(self, metrics: Mapping[str, float], tags: Mapping[str, str] = {}) -> None:
        from mlflow.entities import RunTag

        self._metrics(metrics, step=0)
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def mark_current(self) -> None:
        """Make this run the current one of its identity and retire the earlier ones."""
        query = " and ".join(f"tags.{k} = '{self.identity[k]}'" for k in IDENTITY)
        mark_current(self.client, self.experiment_id, self.run_id, query)


def mark_current(client, experiment_id: str, run_id: str, query: str) -> None:
    """Tag `run_id` current and retire (current=false, superseded_by) the other current runs matching the
    MLflow filter `query`: the one rule for training runs and tuning studies alike."""
    for run in client.search_runs([experiment_id], f"{query} and tags.`{CURRENT}` = 'true'"):
        if run.info.run_id != run_id:
            client.set_tag(run.info.run_id, CURRENT, "false")
            client.set_tag(run.info.run_id, "cifarbench.superseded_by", run_id)
    client.set_tag(run_id, CURRENT, "true")


def _run_exists(client, run_id: str, experiment_id: str) -> bool:
    """False for an unknown id (a store that was reset) and for a run deleted in the UI or moved: the
    resumed run then starts afresh instead of failing on every rerun."""
    try:
        run = client.get_run(run_id)
    except Exception:  # MlflowException
        return False
    return run.info.lifecycle_stage == "active" and run.info.experiment_id == experiment_id


def _param(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
