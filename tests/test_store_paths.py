"""Stores given as relative paths (tracking.uri `sqlite:///mlflow.db`, tune.storage `optuna/studies.journal`)
belong to the user's repository, also when a stage runs in DVC's temporary copy of it (`dvc exp run --temp`
or `--queue`: <repo>/.dvc/tmp/exps/<tmpdir>/), which DVC deletes afterwards. A real MLflow SQLite store and a
real Optuna journal are opened from such a folder."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cifarbench.config import TrackingConfig
from cifarbench.paths import in_repository, repository
from cifarbench.tracking import Tracker, tracking_uri
from cifarbench.tuning.config import TuneConfig
from cifarbench.tuning.storage import ENV_STORAGE, open_storage, storage_url

LR = {"sgd": [0.005, 0.5]}


@pytest.mark.parametrize("cwd, root", [
    ("/home/me/bench", "/home/me/bench"),
    ("/home/me/bench/.dvc/tmp/exps/tmpab12cd", "/home/me/bench"),
    ("/home/me/bench/.dvc/tmp/exps/tmpab12cd/sub", "/home/me/bench"),  # a stage with its own wdir
    ("/home/me/bench/.dvc/tmp/exps", "/home/me/bench/.dvc/tmp/exps"),  # the folder itself is no copy
    ("/home/me/bench/.dvc/tmp/nightly", "/home/me/bench/.dvc/tmp/nightly"),  # the nightly's worktree is its own
])
def test_repository_is_the_one_a_dvc_experiment_copy_was_made_from(cwd, root):
    assert repository(Path(cwd)) == Path(root)


def test_relative_store_paths_resolve_in_the_repository_absolute_ones_stay():
    copy = Path("/srv/bench/.dvc/tmp/exps/tmp1")
    assert in_repository("optuna/studies.journal", copy) == Path("/srv/bench/optuna/studies.journal")
    assert in_repository("/data/studies.journal", copy) == Path("/data/studies.journal")
    assert in_repository("mlflow.db", Path("/srv/bench")) == Path("/srv/bench/mlflow.db")


@pytest.fixture
def experiment_copy(tmp_path, monkeypatch) -> Path:
    """The working directory of a stage in DVC's temporary copy of the repository `tmp_path / "repo"`."""
    for name in ("MLFLOW_TRACKING_URI", ENV_STORAGE):
        monkeypatch.delenv(name, raising=False)
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpx1y2"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    return tmp_path / "repo"


def test_mlflow_store_opened_in_an_experiment_copy_is_the_repositorys(experiment_copy):
    tracking = TrackingConfig(uri="sqlite:///mlflow.db", experiment="queued")
    assert tracking_uri(tracking) == f"sqlite:///{experiment_copy / 'mlflow.db'}"
    tracker = Tracker.open(tracking)
    tracker.client().create_run(tracker.experiment_id, run_name="lenet5/baseline/seed0")
    assert (experiment_copy / "mlflow.db").is_file() and not Path("mlflow.db").exists()
    assert len(tracker.client().search_runs([tracker.experiment_id])) == 1


def test_optuna_journal_opened_in_an_experiment_copy_is_the_repositorys(experiment_copy):
    cfg = TuneConfig(storage="optuna/studies.journal", lr=LR)
    url = storage_url(cfg)
    assert url == str(experiment_copy / "optuna" / "studies.journal")
    study = optuna.create_study(study_name="smoke/lenet5/abc", storage=open_storage(url, cfg))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert (experiment_copy / "optuna" / "studies.journal").stat().st_size > 0 and not Path("optuna").exists()
    assert storage_url(TuneConfig(storage="sqlite:///optuna.db", lr=LR)) == f"sqlite:///{experiment_copy / 'optuna.db'}"
