"""`cifarbench nightly`: run the pipeline under the nightly preset, compare with the baseline, record the
night, write the report. Exit status: 0 nothing regressed (or a baseline was promoted), 1 regressed cells
(named on stderr) or a failed pipeline, 2 a usage or config error."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cifarbench.commands import params_args

DESCRIPTION = "run the nightly preset, compare with the baseline, exit 1 on regressions"


def configure(parser: argparse.ArgumentParser) -> None:
    params_args.add_arguments(parser, preset="nightly")
    parser.add_argument("--update-baseline", action="store_true",
                        help="promote tonight's results to the baseline (deliberately: commit the file)")
    parser.add_argument("--no-run", action="store_true",
                        help="do not run the pipeline; compare the preset's current MLflow runs")


def run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from cifarbench.nightly.compare import compare, summarize
    from cifarbench.nightly.report import write_report
    from cifarbench.nightly.store import append_history, cells_of, comparable_baseline, night, read_history
    from cifarbench.nightly.worktree import head_commit, reproduce, shared_uri
    from cifarbench.plan import all_cells
    from cifarbench.tracking.read import load_runs

    params = params_args.load(args)  # an unknown preset: a ConfigError naming the valid ones
    cfg, preset, project = params.nightly, params.preset, args.params.resolve().parent
    cells = [(c.arch, c.ablation) for c in all_cells(params.plan) if not c.not_applicable]
    # The stored files are read before the pipeline: a bad one is reported now, not after a night of training.
    baseline = comparable_baseline(cfg.baseline, preset, args.update_baseline)
    # The store the nightly's pipeline writes to and the comparison reads: the user's (relative to params.yaml).
    uri = shared_uri(os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri, project)
    # The pipeline runs in the nightly's worktree; its stages open the shared stores themselves.
    pipeline_ok = args.no_run or reproduce(preset, params.tracking.uri, params.tune.storage, args.params) == 0
    tonight = night(summarize(load_runs(uri, params.tracking.experiment, preset), cells), preset=preset,
                    commit=head_commit(project), date=datetime.now(timezone.utc))
    comparison = compare(cells_of(tonight), cells_of(baseline or {"cells": []}), cfg)
    verdicts = {"failed": comparison.failed, "pipeline_ok": pipeline_ok, "regressed": comparison.regressed_names(),
                **{v: comparison.count("accuracy", v) for v in ("regressed", "improved", "diverged", "did not train", "missing")}}
    append_history(cfg.history, tonight, verdicts)
    write_report(cfg.report, comparison, tonight, baseline, read_history(cfg.history, preset), cfg, pipeline_ok)
    print(f"cifarbench nightly: report in {cfg.report}")
    return conclude(args.update_baseline, cfg.baseline, tonight, comparison, pipeline_ok)


def conclude(update_baseline: bool, baseline: Path, tonight: dict, comparison, pipeline_ok: bool) -> int:
    """Promote tonight (--update-baseline), or name the regressed cells; the exit status."""
    from cifarbench.errors import CifarbenchError
    from cifarbench.nightly.store import write_baseline

    if update_baseline:
        if not pipeline_ok:
            raise CifarbenchError("the pipeline failed tonight: not promoting incomplete results to the baseline")
        write_baseline(baseline, tonight)
        print(f"cifarbench nightly: tonight (commit {tonight['commit'][:10]}) is the baseline now: {baseline}")
        return 0
    if not pipeline_ok:
        print("cifarbench nightly: the pipeline failed (see the dvc output above)", file=sys.stderr)
    for name in comparison.regressed_names():
        print(f"regressed: {name}", file=sys.stderr)
    return 1 if comparison.failed or not pipeline_ok else 0
