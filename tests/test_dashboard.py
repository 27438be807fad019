"""Optuna's dashboard reads the project's studies: the journal the tune stage writes (through cifarbench's
lock) loads the way `optuna-dashboard <journal>` loads a file (JournalStorage over a JournalFileBackend with
Optuna's default lock) and through `journal_storage`, the README's one-liner; and the lock Optuna's default
leaves (`<journal>.lock`, a symbolic link to the journal) never makes cifarbench's lock truncate the journal."""

from __future__ import annotations

import os

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from cifarbench.errors import CifarbenchError
from cifarbench.tuning import FlockLock, TuneConfig, journal_storage, open_storage, storage_url

STUDY = "smoke/lenet5/0123456789ab"  # <preset>/<arch>/<hash>, as tuning.search names studies


@pytest.fixture
def journal(tmp_path, monkeypatch) -> str:
    """A tiny study in the journal at tune.storage's default path: 3 trials, one pruned after its first epoch."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFARBENCH_OPTUNA_STORAGE", raising=False)
    cfg = TuneConfig(lr={"sgd": [0.005, 0.5]})
    url = storage_url(cfg)
    study = optuna.create_study(study_name=STUDY, storage=open_storage(url, cfg), direction="maximize")
    for number, accuracy in enumerate((0.31, 0.12, 0.35)):
        trial = study.ask()
        trial.suggest_float("lr", 0.005, 0.5, log=True)
        trial.report(accuracy, step=1)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if number == 1 else study.tell(trial, accuracy)
    return url


def summary(storage) -> list[tuple]:
    """What the dashboard's study list shows: (name, trials, best value) per study."""
    ids = {s.study_name: storage.get_study_id_from_name(s.study_name) for s in storage.get_all_studies()}
    return [(name, len(storage.get_all_trials(i)), storage.get_best_trial(i).value) for name, i in ids.items()]


def test_the_journal_loads_as_optuna_dashboard_loads_a_file(journal):
    assert journal.endswith("optuna/studies.journal")
    as_dashboard = JournalStorage(JournalFileBackend(journal))  # optuna_dashboard._storage_url.get_journal_file_storage
    assert summary(as_dashboard) == summary(journal_storage("optuna/studies.journal")) == [(STUDY, 3, 0.35)]
    pruned = as_dashboard.get_all_trials(as_dashboard.get_study_id_from_name(STUDY))[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.intermediate_values == {1: 0.12}


def test_optunas_default_lock_link_is_waited_for_never_written_through(journal):
    size = os.path.getsize(journal)
    os.rename(f"{journal}.lock", f"{journal}.lock.ours")
    os.symlink(journal, f"{journal}.lock")  # what Optuna's default lock is while another writer appends
    with pytest.raises(CifarbenchError, match="symbolic link, Optuna's default journal lock"):
        FlockLock(f"{journal}.lock", timeout_s=0.2).acquire()
    assert os.path.getsize(journal) == size
    os.unlink(f"{journal}.lock")  # that writer is done: the next append goes ahead
    storage = journal_storage(journal)
    storage.set_study_user_attr(storage.get_study_id_from_name(STUDY), "note", "seen")
    assert os.path.getsize(journal) > size and summary(JournalStorage(JournalFileBackend(journal)))[0][1] == 3
