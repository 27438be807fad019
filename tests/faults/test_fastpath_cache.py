"""Probes: the machine-wide fast-path cache (~/.cache/cifarbench/fast-paths.json), shared by every project
and process on the machine: damaged or written by another version, and updated by two processes at once.

Required: a file this version cannot use is measured again with a warning naming it (never a crash of the
train stage), and two processes recording at once lose none of each other's entries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cifarbench import fastpaths

pytestmark = pytest.mark.faults

ENTRY = {"measured": {"fp32": 100.0, "bf16": None, "bf16+channels_last": 120.0}, "choice": "bf16+channels_last"}
UNUSABLE = {
    "cut short": '{"format": 2, "entries": {"ab',
    "empty": "",
    "a list": "[1, 2, 3]",
    "another version": json.dumps({"abc": ENTRY}),  # the bare {key: entry} of the previous format
    "a future version": json.dumps({"format": 99, "entries": {"abc": ENTRY}}),
}


@pytest.mark.parametrize("what", UNUSABLE)
def test_an_unusable_cache_is_measured_again_with_a_warning(what, tmp_path, capfd):
    cache = tmp_path / "fast-paths.json"
    cache.write_text(UNUSABLE[what])
    assert fastpaths.read_cache(cache) == {}
    err = capfd.readouterr().err
    assert f"warning: fast paths: {cache}" in err and "measuring again" in err, err
    assert fastpaths.record(cache, {"new": ENTRY}) == {"new": ENTRY}  # rewritten whole, in this format
    assert json.loads(cache.read_text()) == {"format": fastpaths.CACHE_FORMAT, "entries": {"new": ENTRY}}


def test_a_bad_entry_alone_is_measured_again(tmp_path, capfd):
    cache = tmp_path / "fast-paths.json"
    cache.write_text(json.dumps({"format": fastpaths.CACHE_FORMAT,
                                 "entries": {"good": ENTRY, "bad": {"choice": "fp64"}, "worse": [1]}}))
    assert fastpaths.read_cache(cache) == {"good": ENTRY}
    assert "2 unreadable entry(ies)" in capfd.readouterr().err


def test_the_train_stage_path_measures_past_a_cut_short_cache(tmp_path, capfd):
    """choose(), what the train stage calls: a cut-short cache costs a measurement, not the stage."""
    cache = tmp_path / "fast-paths.json"
    cache.write_text('{"format": 2, "entr')
    chosen = fastpaths.choose({"lenet5": ({"name": "lenet5", "width": 0.5}, 32)}, threads=1, cache=cache)
    assert chosen["lenet5"]["choice"] in fastpaths.CANDIDATES
    assert "warning: fast paths" in capfd.readouterr().err
    assert list(json.loads(cache.read_text())["entries"].values()) == [chosen["lenet5"]]


RECORD = """
import sys
from pathlib import Path
from cifarbench import fastpaths
cache, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
entry = {"measured": {"fp32": 1.0}, "choice": "fp32"}
print("ready", flush=True)
sys.stdin.readline()  # both start together
for i in range(n):
    fastpaths.record(cache, {f"{who}{i}": entry})
"""


def test_two_processes_recording_at_once_lose_no_entry(tmp_path):
    cache, n = tmp_path / "fast-paths.json", 150
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(RECORD), str(cache), who, str(n)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for who in "ab"]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        assert child.wait(timeout=120) == 0
    entries = json.loads(cache.read_text())["entries"]
    assert sorted(entries) == sorted(f"{who}{i}" for who in "ab" for i in range(n))
