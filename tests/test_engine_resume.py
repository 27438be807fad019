"""Kill-and-resume: a run SIGKILLed mid-epoch and started again ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

CHILD = Path(__file__).with_name("engine_resume_child.py")


def start(checkpoint: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), str(checkpoint), str(out)], stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    proc.communicate(timeout=300)
    assert proc.returncode == 0


def test_sigkill_mid_run_then_resume_gives_identical_metrics(tmp_path):
    uninterrupted = start(tmp_path / "full.pt", tmp_path / "full.json")  # runs alongside: same numbers regardless
    ckpt, out = tmp_path / "killed.pt", tmp_path / "killed.json"
    victim = start(ckpt, out)
    for line in victim.stdout:
        if line.strip() == "epoch 2":
            break
    time.sleep(0.1)  # into epoch 3
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL and not out.exists()
    state = torch.load(ckpt, weights_only=True)
    assert state["status"] == "running" and 2 <= len(state["history"]) < 6

    resumed = start(ckpt, out)
    epochs_after_resume = [int(line.split()[1]) for line in resumed.stdout]
    finish(resumed)
    finish(uninterrupted)
    assert epochs_after_resume == list(range(len(state["history"]) + 1, 7))
    full, again = json.loads((tmp_path / "full.json").read_text()), json.loads(out.read_text())
    assert len(full["history"]) == 6
    assert again == full  # history, status, best epoch and final weights, bit for bit
