"""Training runs: every run of the benchmark is an MLflow run named `<arch>/<ablation>/seed<k>` in the
pipeline's experiment, with the flattened cell config as params, provenance and identity as tags
(tags.py), per-epoch metrics with their epoch as step, final test metrics, system metrics and artifacts.

Reruns: a run is tagged current only once it has finished, and at that moment the earlier runs of the
same identity (preset, arch, ablation, seed) are retired (kept for history, never deleted). The report
reads current runs only (read.py).

Killed runs: a run's id is recorded beside its checkpoint as soon as the run exists, and a killed process's
run is resumed by the next attempt. A kill in between (after the run was created, before its id was
written) leaves a RUNNING run nobody resumes: the next attempt of the same identity ends it KILLED, when
its owner (tag OWNER) is a process of this host that is gone (`end_orphans`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError
from cifarbench.io import atomic_path
from cifarbench.processes import alive, me
from cifarbench.tracking import lineage, store
from cifarbench.tracking.tags import CURRENT, OWNER, RUN_IDENTITY, SUPERSEDED_BY, query

SYSTEM_METRICS_INTERVAL_S = 2  # MLflow's default (10 s) would miss most of a short CPU run


@dataclass(frozen=True)
class Tracker:
    """Where runs go: a resolved tracking URI and an experiment that exists. Made once by the coordinator
    (`Tracker.open`), then handed to every run (it pickles: Ray nodes and worker processes get it whole)."""

    uri: str
    experiment: str
    experiment_id: str

    @classmethod
    def open(cls, cfg: TrackingConfig) -> Tracker:
        """Resolve the URI and create the store and the experiment, once, before any run fans out."""
        store.bound_http_waits()
        uri = store.tracking_uri(cfg)
        return cls(uri, cfg.experiment, store.open_experiment(uri, cfg.experiment))

    def client(self):
        return store.client(self.uri)

    @contextlib.contextmanager
    def training_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                     resume_run_id: str | None = None, id_file: Path | None = None) -> Iterator[RunLog]:
        """Start (or, after a killed process, resume) the MLflow run `name`; ends it FINISHED or FAILED.
        A new run's id goes to `id_file` as soon as the run exists, so a process killed from then on is
        resumed in this run (not left RUNNING beside a second one)."""
        from mlflow.entities import Param
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
        client = self.client()
        identity = identity_of(tags)
        end_orphans(client, self.experiment_id, identity, keep=resume_run_id)
        if resume_run_id and _run_exists(client, resume_run_id, self.experiment_id):
            run_id = resume_run_id
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, OWNER, me())
        else:
            run_id = client.create_run(self.experiment_id, run_name=name,
                                       tags={**tags, CURRENT: "false", OWNER: me()}).info.run_id
            if id_file is not None:
                with atomic_path(id_file) as tmp:  # a kill mid-write leaves no half id (an orphan, unresumable)
                    tmp.write_text(run_id)
        flat = [Param(k, _param(v)) for k, v in flatten(params).items()]
        for start in range(0, len(flat), 100):  # at most 100 per batch; logged again on resume (a kill may have
            client.log_batch(run_id, params=flat[start:start + 100])  # cut them short; same values are allowed)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       resume_logging=run_id == resume_run_id, tracking_uri=self.uri)
        monitor.start()
        status = "FAILED"
        try:
            yield RunLog(client, run_id, self.experiment_id, identity)
            status = "FINISHED"
        finally:
            monitor.finish()
            try:
                client.set_terminated(run_id, status)
            except Exception as exc:  # the server went away mid-run: say so, not MLflow's retry trace
                if store.unreachable(exc):
                    raise CifarbenchError(f"{store.unreachable_message(self.uri)}. Run {run_id} stays RUNNING; its "
                                          "checkpoint is kept and a rerun resumes it") from exc
                raise

    def end_killed(self, run_ids: Sequence[str], tags: Sequence[Mapping[str, str]] = ()) -> None:
        """Mark runs that were still RUNNING when their workers were stopped as KILLED: `run_ids` (recorded
        beside their checkpoints) and any run of the identity in `tags` (one run's tags each) whose owner on
        this host is gone (a worker stopped after it created its run, before it recorded the id: under load
        that window is wide)."""
        client = self.client()
        for run_id in run_ids:
            with contextlib.suppress(Exception):  # a run deleted meanwhile, or a server gone: nothing to end
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "KILLED")
        for run_tags in tags:
            with contextlib.suppress(Exception):
                end_orphans(client, self.experiment_id, identity_of(run_tags), say=False)


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
        log_metrics(self.client, self.run_id, values, step)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def log_datasets(self, archive: lineage.Archive, subsets: Sequence[lineage.DataSubset]) -> None:
        lineage.log_datasets(self.client, self.run_id, archive, subsets)

    def log_model_files(self, weights: Path, config: Path) -> None:
        lineage.log_model_files(self.client, self.run_id, weights, config)

    def mark_current(self) -> None:
        """Make this run the current one of its identity and retire the earlier ones."""
        mark_current(self.client, self.experiment_id, self.run_id, self.identity)


def log_metrics(client, run_id: str, values: Mapping[str, float], step: int) -> None:
    """`values` in one request, all at `step` (an epoch; 0 for a run's final numbers)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])


def mark_current(client, experiment_id: str, run_id: str, identity: Mapping[str, str]) -> None:
    """Tag `run_id` current and retire (current=false, superseded_by) the other current runs with the
    same `identity` tags: the one rule for training runs and tuning studies alike."""
    for run in client.search_runs([experiment_id], query({**identity, CURRENT: "true"})):
        if run.info.run_id != run_id:
            client.set_tag(run.info.run_id, CURRENT, "false")
            client.set_tag(run.info.run_id, SUPERSEDED_BY, run_id)
    client.set_tag(run_id, CURRENT, "true")


def identity_of(tags: Mapping[str, Any]) -> dict[str, str]:
    """The tags of `tags` that name one run of the benchmark (RUN_IDENTITY), as MLflow stores them."""
    return {k: str(tags[k]) for k in RUN_IDENTITY}


def end_orphans(client, experiment_id: str, identity: Mapping[str, str], keep: str | None = None,
                say: bool = True) -> list[str]:
    """End KILLED the RUNNING runs of `identity` (but `keep`, the run about to be resumed) whose owner is a
    process of this host that is gone; returns their ids. A run of a live process is left alone, and so is
    one of another host (a Ray node: whether its process lives cannot be told from here) or one written
    before runs named their owner."""
    ended = []
    for run in client.search_runs([experiment_id], f"{query(dict(identity))} and attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER)
        if run.info.run_id == keep or owner is None or alive(owner) is not False:
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
        if say:
            print(f"tracking: MLflow run {run.info.run_id} ({run.info.run_name}) was left RUNNING by a process that "
                  f"is gone ({owner}); ended KILLED", file=sys.stderr, flush=True)
    return ended


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


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
