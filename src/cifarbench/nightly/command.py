"""`cifarbench nightly`: run the pipeline under the nightly preset, compare with the baseline, record the
night, write the report. Exit status: 0 nothing regressed (or a baseline was promoted), 1 regressed cells
(named on stderr) or a failed pipeline, 2 a usage or config error."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError, ConfigError
from cifarbench.nightly.compare import compare, summarize
from cifarbench.nightly.config import NightlyConfig
from cifarbench.nightly.store import append_history, cells_of, night, read_baseline, read_history, write_baseline
from cifarbench.params import Params, load


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="nightly", help="the preset to run and compare (default %(default)s)")
    parser.add_argument("--update-baseline", action="store_true",
                        help="promote tonight's results to the baseline (deliberately: commit the file)")
    parser.add_argument("--no-run", action="store_true",
                        help="do not run the pipeline; compare the preset's current MLflow runs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="default %(default)s")


def run(args: argparse.Namespace) -> int:
    params = load(args.params).with_preset(args.preset)  # an unknown preset: a ConfigError naming the valid ones
    cfg = params.nightly
    cells = applicable_cells(params)
    # The stored files are read before the pipeline: a bad one is reported now, not after a night of training.
    baseline = comparable_baseline(cfg, args.preset, args.update_baseline)
    uri = shared_tracking_uri(params.tracking, args.params)
    pipeline_ok = args.no_run or _reproduce(args, params) == 0
    tonight = night(summarize(tonight_runs(uri, params.tracking, args.preset), cells), preset=args.preset,
                    commit=_git_commit(args.params), date=datetime.now(timezone.utc))
    comparison = compare(cells_of(tonight), cells_of(baseline or {"cells": []}), cfg)
    verdicts = {"failed": comparison.failed, "pipeline_ok": pipeline_ok, "regressed": comparison.regressed_names(),
                **{v: comparison.count("accuracy", v) for v in ("regressed", "improved", "diverged", "did not train", "missing")}}
    append_history(cfg.history, tonight, verdicts)
    from cifarbench.nightly.report import write_report

    write_report(cfg.report, comparison, tonight, baseline, read_history(cfg.history, args.preset), cfg, pipeline_ok)
    print(f"cifarbench nightly: report in {cfg.report}")
    return _conclude(args, cfg, tonight, comparison, pipeline_ok)


def comparable_baseline(cfg: NightlyConfig, preset: str, replacing: bool) -> dict | None:
    """The baseline tonight is compared with; None if there is none of `preset`. When tonight replaces
    it (--update-baseline), one that cannot be read or holds another preset is only reported."""
    try:
        baseline = read_baseline(cfg.baseline)
    except CifarbenchError as exc:
        if not replacing:
            raise
        print(f"cifarbench nightly: {exc}; replacing it tonight", file=sys.stderr)
        return None
    if baseline and baseline["preset"] != preset:
        if not replacing:
            raise ConfigError(f"{cfg.baseline} holds preset {baseline['preset']!r}, tonight is {preset!r}: "
                              "promote a night of this preset with --update-baseline, or set nightly.baseline")
        return None
    return baseline


def _reproduce(args: argparse.Namespace, params: Params) -> int:
    """The pipeline in the nightly's worktree; its stages open the shared stores themselves."""
    from cifarbench.nightly.worktree import reproduce

    return reproduce(args.preset, params.tracking.uri, params.tune.storage, args.params)


def _conclude(args, cfg: NightlyConfig, tonight: dict, comparison, pipeline_ok: bool) -> int:
    if args.update_baseline:
        if not pipeline_ok:
            raise CifarbenchError("the pipeline failed tonight: not promoting incomplete results to the baseline")
        write_baseline(cfg.baseline, tonight)
        print(f"cifarbench nightly: tonight (commit {tonight['commit'][:10]}) is the baseline now: {cfg.baseline}")
        return 0
    if not pipeline_ok:
        print("cifarbench nightly: the pipeline failed (see the dvc output above)", file=sys.stderr)
    for name in comparison.regressed_names():
        print(f"regressed: {name}", file=sys.stderr)
    return 1 if comparison.failed or not pipeline_ok else 0


def applicable_cells(params: Params) -> list[tuple[str, str]]:
    """The (arch, ablation) cells the preset trains: every cell of params.yaml but the not-applicable ones."""
    from cifarbench.plan import all_cells

    return [(c.arch, c.ablation) for c in all_cells(params.plan) if not c.not_applicable]


def shared_tracking_uri(tracking: TrackingConfig, params: Path) -> str:
    """The MLflow store the nightly's pipeline writes to and the comparison reads from: the user's, a
    relative SQLite path taken from params.yaml's folder."""
    from cifarbench.nightly.worktree import shared_uri

    return shared_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking.uri, params.resolve().parent)


def tonight_runs(uri: str, tracking: TrackingConfig, preset: str):
    from cifarbench.tracking.read import load_runs

    return load_runs(uri, tracking.experiment, preset)


def _git_commit(params: Path) -> str:
    found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=params.resolve().parent)
    return found.stdout.strip() if found.returncode == 0 else "unknown"
