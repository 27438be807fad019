"""Probes: a command stopped by Ctrl-C (SIGINT) exits 130, by `kill` or a cancelled CI job (SIGTERM) 143,
each with one line on stderr and no traceback, and its cleanup (`finally`) runs on the way out
(cifarbench.errors.run_as_command). Fast: the real commands are caught in a download from a loopback
server that never answers, before any heavy import."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import yaml

from project import BIN, ROOT

pytestmark = pytest.mark.faults

STOPS = [(signal.SIGINT, 130, r"interrupted: {name} stopped by Ctrl-C; rerun to resume"),
         (signal.SIGTERM, 143, r"terminated: {name} stopped by SIGTERM; rerun to resume")]
IDS = ["ctrl-c", "sigterm"]


def stop_and_wait(child: subprocess.Popen, signum: int) -> tuple[int, str]:
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    return child.returncode, err


@pytest.mark.parametrize(("signum", "status", "line"), STOPS, ids=IDS)
@pytest.mark.parametrize("via", ["cifarbench data", "stages/download.py"])
def test_a_stopped_command_exits_with_128_plus_the_signal_and_one_line(serve, tmp_path, via, signum, status, line):
    asked = threading.Event()

    def never_answers(request, stop) -> None:
        asked.set()
        stop.wait(60)

    url = serve(never_answers)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"url": url, "md5": "0" * 32}}))
    cmd = ([str(BIN / "cifarbench"), "data", "--step", "download"] if via == "cifarbench data"
           else [sys.executable, str(ROOT / via)])
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert asked.wait(60), "the command never asked the server for the archive"
        code, err = stop_and_wait(child, signum)
    finally:
        child.kill()
        child.wait()
    assert code == status, err
    assert err.splitlines() == [line.format(name=via)], err


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cifarbench.errors import command_main

    def run(args):
        try:
            print("working", flush=True)
            time.sleep(60)
        finally:
            Path("cleaned-up").write_text("the finally block ran")

    sys.exit(command_main("probe", "sleeps until stopped", lambda parser: None, run, []))
""")


@pytest.mark.parametrize(("signum", "status", "line"), STOPS, ids=IDS)
def test_a_stopped_command_runs_its_cleanup(tmp_path, signum, status, line):
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "working\n"
        code, err = stop_and_wait(child, signum)
    finally:
        child.kill()
        child.wait()
    assert code == status and err.splitlines() == [line.format(name="probe")], err
    assert (tmp_path / "cleaned-up").read_text() == "the finally block ran"  # SIGTERM's default would skip it
