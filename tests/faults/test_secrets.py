"""Probes: a password in the tracking URI or the Optuna storage URL never reaches what is printed or raised.

The URLs point at a closed 127.0.0.1 port, so every path below fails the way a server that is down does,
through the real code: the tracking store's check, `cifarbench report` and `cifarbench nightly` (whose
MLflow errors embed the whole URI), the Optuna storage, and the command line's printer of unexpected
errors. Each asserts the secret is absent and the masked form (`user:***@`) is what the user sees.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError, run_reporting_errors
from cifarbench.execute import Done
from cifarbench.redact import mask_credentials
from cifarbench.tracking import Tracker

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret"


def closed_url(scheme: str = "http", path: str = "") -> str:
    with socket.socket() as s:  # bound, then released: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{scheme}://bench:{SECRET}@127.0.0.1:{port}{path}"


@pytest.mark.parametrize("text, shown", [
    ("API request to http://u:s3cret@127.0.0.1:5/api/2.0/x failed", "API request to http://u:***@127.0.0.1:5/api/2.0/x failed"),
    ("postgresql+psycopg://bench:p@ss:w0rd@db:5432/optuna", "postgresql+psycopg://bench:***@db:5432/optuna"),
    ("two: 'https://a:b@h1/x', https://c:d@h2", "two: 'https://a:***@h1/x', https://c:***@h2"),
    ("http://host:5000/api?x=u:v@w and mail a:b@c", "http://host:5000/api?x=u:v@w and mail a:b@c"),
    ("./optuna.journal", "./optuna.journal"),
])
def test_every_password_in_a_text_is_masked(text, shown):
    assert mask_credentials(text) == shown


def test_the_store_check_names_the_server_without_its_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = closed_url()
    with pytest.raises(CifarbenchError) as caught:
        Tracker.open(TrackingConfig(uri=url))
    assert SECRET not in str(caught.value) and "bench:***@127.0.0.1" in str(caught.value)


@pytest.mark.parametrize("command", [["report"], ["nightly", "--no-run"]])
def test_report_and_nightly_print_no_password(tmp_path, command):
    """The real command line, as the nightly workflow runs it with its URI from a repository secret."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "MLFLOW_TRACKING_URI": closed_url(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = subprocess.run([sys.executable, "-m", "cifarbench.cli", *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert SECRET not in out and "bench:***@127.0.0.1" in out and "could not be reached" in out, out
    assert "Traceback" not in out, out


def test_an_unreachable_optuna_storage_is_named_without_its_password():
    pytest.importorskip("psycopg")
    from cifarbench.tuning.config import TuneConfig
    from cifarbench.tuning.storage import open_storage

    with pytest.raises(CifarbenchError) as caught:
        open_storage(closed_url("postgresql+psycopg", "/optuna"), TuneConfig(lr={"sgd": (1e-3, 1.0)}))
    message = str(caught.value)
    assert SECRET not in message and "bench:***@127.0.0.1" in message and "CIFARBENCH_OPTUNA_STORAGE" in message


def test_an_unexpected_error_is_printed_masked(capsys):
    """What the command line does with an error it did not foresee (MLflow's own, say): its traceback, masked."""
    url = closed_url()

    def fails() -> None:
        raise RuntimeError(f"API request to {url}/api/2.0/mlflow/runs/create failed")

    assert run_reporting_errors(fails) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "Traceback" in err and "bench:***@127.0.0.1" in err


def test_a_run_error_is_masked_before_anyone_prints_it():
    """Both executors hand a run's traceback to the stage as Done.error, which the stage prints and raises."""
    done = Done("lenet5/baseline/seed0", error=f"Traceback ...\nMlflowException: API request to {closed_url()} failed")
    assert SECRET not in done.error and "bench:***@" in done.error
