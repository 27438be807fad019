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
import logging
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cifarbench.config import TrackingConfig

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


def ensure_experiment(uri: str, name: str, home: Path) -> None:
    """Create experiment `name` in a local store (SQLite, file) unless it exists, its artifacts under
    `home`/mlruns. MLflow would put them under ./mlruns of whichever process creates the experiment first,
    and every later run's artifacts follow: for `cifarbench nightly`, a worktree rebuilt at will."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if uri.split(":", 1)[0] in ("http", "https", "databricks", "postgresql", "mysql"):
        return  # a server or a shared database has its own artifact root
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        with contextlib.suppress(MlflowException):  # created meanwhile by another process: as good
            client.create_experiment(name, artifact_location=(home / "mlruns" / name).resolve().as_uri())


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
        "host_cpu": _cpu_model(),
        "host_gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "host_cores": str(os.cpu_count()),
    }


def _cpu_model() -> str:
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


class RunLog:
    """A started MLflow run of one (arch, ablation, seed)."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id

    def log_epoch(self, record: Mapping[str, float], epoch: int) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=epoch)

    def log_final(self, metrics: Mapping[str, float], tags: Mapping[str, str] = {}) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags(dict(tags))

    def log_artifact(self, path: Path) -> None:
        import mlflow

        mlflow.log_artifact(str(path))

    def mark_current(self, identity: Mapping[str, str]) -> None:
        """Make this run the current one of its identity and retire the earlier ones."""
        query = " and ".join(f"tags.{k} = '{identity[k]}'" for k in IDENTITY)
        mark_current(self.client, self.experiment_id, self.run_id, query)


def mark_current(client, experiment_id: str, run_id: str, query: str) -> None:
    """Tag `run_id` current and retire (current=false, superseded_by) the other current runs matching the
    MLflow filter `query`: the one rule for training runs and tuning studies alike."""
    for run in client.search_runs([experiment_id], f"{query} and tags.`{CURRENT}` = 'true'"):
        if run.info.run_id != run_id:
            client.set_tag(run.info.run_id, CURRENT, "false")
            client.set_tag(run.info.run_id, "cifarbench.superseded_by", run_id)
    client.set_tag(run_id, CURRENT, "true")


@contextlib.contextmanager
def training_run(cfg: TrackingConfig, *, name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                 resume_run_id: str | None = None) -> Iterator[RunLog]:
    """Start (or, after a killed process, resume) the MLflow run `name`; ends it FINISHED or FAILED."""
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.set_experiment(cfg.experiment)
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    client = MlflowClient()
    if resume_run_id and not _run_exists(client, resume_run_id):
        resume_run_id = None
    with mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else name,
                          log_system_metrics=True) as run:
        if not resume_run_id:
            mlflow.set_tags({**tags, CURRENT: "false"})
            mlflow.log_params({k: _param(v) for k, v in flatten(params).items()})
        yield RunLog(client, run.info.run_id, experiment.experiment_id)


def _run_exists(client, run_id: str) -> bool:
    try:
        client.get_run(run_id)
        return True
    except Exception:  # MlflowException for an unknown id, e.g. a store that was reset
        return False


def _param(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
