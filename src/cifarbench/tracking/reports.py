"""The report's own MLflow run: each `report` stage attaches what it wrote to a run `report/<preset>` (kind
REPORT) in the pipeline's experiment, tagged with the preset, the commit and how many training runs it read.
The latest is current, the earlier ones are retired (runs.mark_current), so the MLflow UI shows which
report the current runs made, and every earlier report stays there with the commit that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifarbench.tracking import tags as t
from cifarbench.tracking.runs import Tracker, mark_current

RUNS_READ = "runs_read"  # tag: the training runs the report counted


def log_report(tracker: Tracker, preset: str, runs_read: int, files: Sequence[Path],
               folders: Sequence[Path] = ()) -> str:
    """A finished run `report/<preset>` holding `files` at its artifact root and each of `folders` under its
    own name (figures/); returns its id."""
    client = tracker.client()
    tags = {**t.provenance(), **t.report_identity(preset), t.CURRENT: "false", RUNS_READ: str(runs_read)}
    run_id = client.create_run(tracker.experiment_id, run_name=f"report/{preset}", tags=tags).info.run_id
    status = "FAILED"
    try:
        for path in files:
            client.log_artifact(run_id, str(path))
        for folder in folders:
            client.log_artifacts(run_id, str(folder), folder.name)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    mark_current(client, tracker.experiment_id, run_id, t.report_identity(preset))
    return run_id
