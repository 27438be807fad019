"""The tag vocabulary of cifarbench's MLflow runs: every tag name the package writes or filters on, and
the provenance tags every run carries. Writers (runs.py, studies.py) and readers (read.py) take their
names from here, so a query always matches what was written.

Training runs carry RUN_IDENTITY (which names one run of the benchmark), ABLATION_GROUP, STATUS, the
cell's CONFIG_HASH and CELL_KEY, DATA_MD5, the provenance tags and where they ran (runner.placement).
Tuning runs carry KIND: TUNE on a study's parent run `tune/<arch>` (`tune/<arch>/<ablation>` for an
ablation's own study), TUNE_TRIAL on each trial's run, and the ARCH and ABLATION of the cell tuned; the
report's run `report/<preset>` carries REPORT.
CURRENT is 'true' on the one current run of an identity (see runs.mark_current).
"""

from __future__ import annotations

import os
import platform
import subprocess

from cifarbench.fastpaths import cpu_model

CURRENT = "cifarbench.current"  # 'true' on the current run of its identity, 'false' before it ends and once replaced
SUPERSEDED_BY = "cifarbench.superseded_by"  # on a replaced run: the id of the run that replaced it
KIND = "cifarbench.kind"  # absent on training runs
TUNE, TUNE_TRIAL, REPORT = "tune", "tune-trial", "report"  # values of KIND
PARENT = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its study's parent run

PRESET, ARCH, ABLATION, SEED = "preset", "arch", "ablation", "seed"
RUN_IDENTITY = (PRESET, ARCH, ABLATION, SEED)  # names one run of the benchmark (reruns share it)
ABLATION_GROUP = "ablation_group"
STATUS = "status"  # completed / early_stopped / diverged (the engine's FitResult.status)
# 'true' or 'false' on a finished training run; on 'false', DID_NOT_TRAIN says why (loss not finite, training
# accuracy near chance, or one class predicted for nearly every test image): such a run is named, never averaged
TRAINED, DID_NOT_TRAIN = "trained", "did_not_train"
CONFIG_HASH, CELL_KEY, DATA_MD5 = "config_hash", "cell_key", "data_md5"

STUDY = "study"  # `<preset>/<arch>/<hash>` (`<preset>/<arch>/<ablation>/<hash>` for an own study), parent and trials
STORAGE = "storage"  # the Optuna storage, password hidden (parent run)
TUNED = "tuned"  # 'true' when the study found values (parent run)
TRIAL, STATE, RETRY_OF = "trial", "state", "retry_of"  # a trial's number, its state, the trial it retries
REASON, DIVERGED = "reason", "diverged"  # why a trial failed; the epoch a trial's loss stopped being finite

HOST, WORKER, CUDA_VISIBLE_DEVICES = "host", "worker", "cuda_visible_devices"  # where a run ran (runner.placement)
# host/pid@start-time of the process that created or last resumed a training run (cifarbench.processes.me):
# a RUNNING run whose owner is gone was left by a killed process (runs.end_orphans)
OWNER = "cifarbench.owner"
FAST = "fast."  # prefix of the CPU fast paths a run used and how they were chosen (fast.device, fast.measured, ...)

GIT_COMMIT, GIT_DIRTY, DVC_STAGE = "git_commit", "git_dirty", "dvc_stage"  # provenance (below)
TORCH_VERSION, MLFLOW_VERSION, PYTHON_VERSION = "torch_version", "mlflow_version", "python_version"
HOST_CPU, HOST_GPU, HOST_CORES = "host_cpu", "host_gpu", "host_cores"


def run_identity(preset: str, arch: str, ablation: str, seed: int) -> dict[str, str]:
    return {PRESET: preset, ARCH: arch, ABLATION: ablation, SEED: str(seed)}


def study_identity(preset: str, arch: str, ablation: str) -> dict[str, str]:
    """The tags that name a study's parent run across its reruns (one is current per preset, arch and the
    ablation whose cell it tunes: `baseline`, or a `tune: own` ablation). Parent runs written before the
    ablation tag existed are baseline studies (cifarbench.report.tables.tuning reads them so)."""
    return {KIND: TUNE, ARCH: arch, ABLATION: ablation, PRESET: preset}


def report_identity(preset: str) -> dict[str, str]:
    """The tags that name the report's run across its rebuilds (one is current per preset)."""
    return {KIND: REPORT, PRESET: preset}


def query(tags: dict[str, str]) -> str:
    """An MLflow filter matching runs with all of `tags`. The filter language has no escaping, so a value
    with a quote is refused (presets are checked against this in cifarbench.config)."""
    for value in tags.values():
        if "'" in str(value):
            raise ValueError(f"a tag value in an MLflow filter cannot hold a quote: {value!r}")
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


# --- provenance: where a result came from ----------------------------------------------------------------

# What the pipeline itself writes into the repository (per-cell results and the report are tracked by git, so
# that `dvc metrics diff` and git keep their history): a run that changed only these is not from a dirty tree.
PIPELINE_OUTPUTS = ("runs", "reports", "dvc.lock")


def provenance() -> dict[str, str]:
    """Code version (dirty: a tracked file other than the pipeline's own outputs differs from the commit), DVC
    stage, library versions, machine."""
    import mlflow
    import torch

    return {
        GIT_COMMIT: _git("rev-parse", "HEAD"),
        GIT_DIRTY: str(bool(_git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                 *(f":(top,exclude){path}" for path in PIPELINE_OUTPUTS)))).lower(),
        DVC_STAGE: os.environ.get("DVC_STAGE", ""),
        TORCH_VERSION: torch.__version__,
        MLFLOW_VERSION: mlflow.__version__,
        PYTHON_VERSION: platform.python_version(),
        HOST_CPU: cpu_model(),
        HOST_GPU: torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        HOST_CORES: str(os.cpu_count()),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
