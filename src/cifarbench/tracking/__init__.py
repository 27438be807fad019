"""The one package that talks to MLflow, writing and reading; nothing else in cifarbench imports mlflow.

    tags.py     the tag vocabulary (every tag name, the identity tuples, filter queries) and provenance
    store.py    the tracking URI, creating or checking the store, a server's bounded waits and errors
    runs.py     training runs: Tracker.training_run, RunLog, the current-run rule (mark_current)
    lineage.py  a training run's dataset inputs (archive, split, subset) and its weights under `model/`
    studies.py  a tuning study's parent run and its trials' nested runs (StudyLog, TrialLog)
    reports.py  the report stage's own run `report/<preset>`, its files as artifacts (log_report)
    read.py     the current runs as pandas DataFrames, for the report and the nightly (load_runs, ...;
                imported on its own: it needs pandas)

Importing the package imports neither MLflow nor pandas (worker processes import it on start).
"""

from cifarbench.tracking.lineage import Archive, DataSubset, download_model_files
from cifarbench.tracking.reports import log_report
from cifarbench.tracking.runs import RunLog, Tracker, flatten, mark_current
from cifarbench.tracking.store import (
    HTTP_DEFAULTS, bound_http_waits, check_sqlite_store, create_sqlite_store, tracking_uri, unreachable_message,
)
from cifarbench.tracking.studies import StudyLog, TrialLog
from cifarbench.tracking.tags import CURRENT, RUN_IDENTITY, cpu_model, provenance

__all__ = [
    "Archive", "CURRENT", "DataSubset", "HTTP_DEFAULTS", "RUN_IDENTITY", "RunLog", "StudyLog", "Tracker", "TrialLog",
    "bound_http_waits", "check_sqlite_store", "cpu_model", "create_sqlite_store", "download_model_files", "flatten",
    "log_report", "mark_current", "provenance", "tracking_uri", "unreachable_message",
]
