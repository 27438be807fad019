"""One seed of the smoke preset's lenet5/baseline cell through `runner.train_run`, in its own process, for the
probes that kill a run at a kill point (killpoint/sitecustomize.py) and run it again:

    python tests/faults/run_child.py PREPARED FOLDER [FAST_PATH]
    python tests/faults/run_child.py PREPARED FOLDER --executor

FOLDER holds the MLflow store (mlflow.db), the run's work folder (checkpoint, MLflow run id, result) and its
models; FAST_PATH is a cifarbench.fastpaths candidate (fp32, bf16, ...): what the machine's fast-path cache
would hand the run. `--executor`: the run goes through the train stage's coordinator (pipeline._execute) on the
local executor's worker processes instead. `spec(...)` builds the same run in the test's own process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from cifarbench import fastpaths
from cifarbench.config import TrackingConfig
from cifarbench.params import parse
from cifarbench.plan import resolve_cell
from cifarbench.runner import RunSpec, train_run
from cifarbench.tracking import Tracker
from small_params import small_params

EXPERIMENT = "probe"
TAGS = {"git_commit": "probe", "preset": "smoke", "arch": "lenet5", "ablation": "baseline", "seed": "0"}


def spec(prepared: Path, folder: Path, fast_path: str | None = None) -> RunSpec:
    cell = resolve_cell(parse(small_params(preset="smoke", presets__smoke__seeds=[0])).plan, "lenet5", "baseline")
    tracker = Tracker.open(TrackingConfig(uri=f"sqlite:///{folder}/mlflow.db", experiment=EXPERIMENT))
    (folder / "work").mkdir(parents=True, exist_ok=True)
    cpu_paths = fastpaths.CANDIDATES[fast_path] if fast_path else None
    return RunSpec(cell, 0, prepared, folder / "work", folder / "models", tracker, dict(TAGS), cpu_paths)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[3:] == ["--executor"]:
        from cifarbench.execute import ExecutorConfig, running
        from cifarbench.pipeline import _execute, cell_cost

        with running(ExecutorConfig(), gpu=False) as executor:
            _execute([spec(Path(sys.argv[1]), Path(sys.argv[2]))], executor, cell_cost, on_cell=lambda name, done: None)
    else:
        train_run(spec(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4]))
