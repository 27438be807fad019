"""Probes: a tracking server (MLFLOW_TRACKING_URI / params.yaml `tracking.uri` = http://...) that refuses
connections, one that accepts and never answers, and one killed in the middle of a run.

Required every time: a CifarbenchError within a bounded time that names the tracking URI and says to start
the server or fix MLFLOW_TRACKING_URI / tracking.uri (not a hang, not MLflow's retry trace), and nothing
already computed lost (the run's local files untouched, the epochs logged before the kill kept).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError
from cifarbench.tracking import HTTP_DEFAULTS, Tracker
from project import mlflow_server_process, stop_server

pytestmark = pytest.mark.faults

FIX = ("start the server", "MLFLOW_TRACKING_URI", "tracking.uri")


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_timed(uri: str) -> tuple[CifarbenchError, float]:
    started = time.monotonic()
    with pytest.raises(CifarbenchError) as caught:
        Tracker.open(TrackingConfig(uri=uri))
    return caught.value, time.monotonic() - started


def assert_clear(error: BaseException, uri: str) -> None:
    message = str(error)
    assert uri in message and all(what in message for what in FIX), message
    assert "Traceback" not in message and "Max retries" not in message  # MLflow's text stays in the cause


def test_default_waits_are_bounded():
    """With the defaults a server that never answers costs one call at most ~65 s (MLflow's own: 120 s x 8
    tries plus backoff, ~20 min): tries x timeout + urllib3's backoff (0 for the first retry, then
    factor x 2^(n-1)) + MLflow's jitter (<= 1 s per retry)."""
    timeout = float(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    retries = int(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    backoff = sum(factor * 2 ** (n - 1) for n in range(2, retries + 1)) + retries * 1.0
    assert (retries + 1) * timeout + backoff <= 65


def test_refused_fails_fast_naming_the_uri(tmp_path, monkeypatch):
    """Nobody listens on the port; the default waits (only the backoff applies: ~3 s)."""
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)  # the defaults, whatever the caller's environment says
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the variable wins over the config's uri
    error, seconds = open_timed("sqlite:///unused.db")
    assert seconds < 30, seconds
    assert_clear(error, uri)
    assert list(tmp_path.iterdir()) == []  # no local store made on the side


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """http://127.0.0.1:<port> of a socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: done
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_blackholed_fails_within_the_set_waits(monkeypatch):
    """The user's small waits are kept (bound_http_waits sets only what is unset): one 2 s try."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with blackhole() as uri:
        error, seconds = open_timed(uri)
    assert seconds < 15, seconds
    assert_clear(error, uri)
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT=2" in str(error)  # the waits it gave up after


@pytest.mark.slow  # the server's start: ~15 s idle, up to ~45 s on busy cores
def test_server_killed_mid_run_raises_and_keeps_the_local_state(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "server.db"
    checkpoint = tmp_path / "seed0.pt"
    with mlflow_server_process(tmp_path, f"sqlite:///{db}") as (uri, server):
        tracker = Tracker.open(TrackingConfig(uri=uri))
        started = None
        with pytest.raises(CifarbenchError) as caught:
            with tracker.training_run("lenet5/baseline/seed0", {"preset": "smoke", "arch": "lenet5",
                                                                "ablation": "baseline", "seed": "0"},
                                      {"epochs": 2}, id_file=tmp_path / "seed0.mlflow-run") as log:
                log.log_epoch({"epoch": 1, "val_acc": 0.25}, 1)
                checkpoint.write_bytes(b"epoch 1 weights")  # what the engine writes after each epoch
                stop_server(server)
                monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
                monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
                started = time.monotonic()
                log.log_epoch({"epoch": 2, "val_acc": 0.5}, 2)
        seconds = time.monotonic() - started
    assert seconds < 30, seconds  # the failed log, the monitor's stop and the failed set_terminated together
    assert_clear(caught.value, uri)
    assert checkpoint.read_bytes() == b"epoch 1 weights"
    run_id = (tmp_path / "seed0.mlflow-run").read_text()  # the id a rerun resumes
    store = MlflowClient(f"sqlite:///{db}")  # the server's own store, read directly
    assert store.get_run(run_id).info.status == "RUNNING"
    assert [(m.step, m.value) for m in store.get_metric_history(run_id, "val_acc")] == [(1, 0.25)]
