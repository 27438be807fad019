"""Probes: `cifarbench doctor` repairs only a file it recognizes as an Optuna journal. Given (as tune.storage)
a SQLite database, a file of other lines or a folder, it reports a problem naming the path and the fix,
and the file is byte-identical afterwards; no traceback."""

from __future__ import annotations

import sqlite3

import pytest

from cifarbench.errors import CifarbenchError
from cifarbench.tuning.storage import repair_journal

pytestmark = pytest.mark.faults


def test_a_sqlite_database_is_refused_and_left_as_it_was(tmp_path):
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table runs (id text)")
    with open(db, "ab") as f:
        f.write(b"no newline at the end")  # the last 'line' doctor used to cut
    before = db.read_bytes()
    with pytest.raises(CifarbenchError, match=rf"{db} is not an Optuna journal: it is a SQLite database.*"
                                              "Nothing in it was changed"):
        repair_journal(str(db))
    assert db.read_bytes() == before and list(tmp_path.iterdir()) == [db]


def test_a_file_of_other_lines_is_refused_and_left_as_it_was(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"first line\nsecond, cut short")
    with pytest.raises(CifarbenchError, match="its first line is not one of Optuna's journal records"):
        repair_journal(str(notes))
    assert notes.read_bytes() == b"first line\nsecond, cut short"


def test_a_journal_damaged_inside_is_not_cut(tmp_path):
    journal = tmp_path / "studies.journal"
    text = b'{"op_code":0,"worker_id":"w"}\n[1, 2]\n{"op_co'
    journal.write_bytes(text)
    with pytest.raises(CifarbenchError, match=r"damaged inside \(line 2 .*doctor changed nothing"):
        repair_journal(str(journal))
    assert journal.read_bytes() == text


def test_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CifarbenchError, match=rf"{tmp_path} is a folder, not an Optuna journal"):
        repair_journal(str(tmp_path))


def test_a_torn_journal_is_still_cut(tmp_path):
    journal = tmp_path / "studies.journal"
    journal.write_bytes(b'{"op_code":0,"worker_id":"w"}\n{"op_co')
    assert "cut off" in repair_journal(str(journal))
    assert journal.read_bytes() == b'{"op_code":0,"worker_id":"w"}\n'
