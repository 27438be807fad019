"""`cifarbench nightly`: run the pipeline under the nightly preset, compare with the baseline, record the
night, write the report. Exit status: 0 nothing regressed (or a baseline was promoted), 1 regressed cells
(named on stderr) or a failed pipeline, 2 a usage or config error."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from cifarbench.config import TrackingConfig, load_params, parse_section
from cifarbench.errors import CifarbenchError, ConfigError
from cifarbench.nightly.compare import compare, summarize
from cifarbench.nightly.config import NightlyConfig
from cifarbench.nightly.store import append_history, cells_of, night, read_baseline, read_history, write_baseline


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="nightly", help="the preset to run and compare (default %(default)s)")
    parser.add_argument("--update-baseline", action="store_true",
                        help="promote tonight's results to the baseline (deliberately: commit the file)")
    parser.add_argument("--no-run", action="store_true",
                        help="do not run the pipeline; compare the preset's current MLflow runs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="default %(default)s")


def run(args: argparse.Namespace) -> int:
    from cifarbench.nightly.override import reproduce

    tree = load_params(args.params)
    cfg = parse_section(NightlyConfig, tree.get("nightly"), "nightly")
    cells = applicable_cells(tree, args.preset)
    pipeline_ok = args.no_run or reproduce(args.preset, args.params) == 0
    tonight = night(summarize(tonight_runs(tree, args.preset), cells), preset=args.preset,
                    commit=_git_commit(), date=datetime.now(timezone.utc))
    baseline = read_baseline(cfg.baseline)
    if baseline and baseline["preset"] != args.preset and not args.update_baseline:
        raise ConfigError(f"{cfg.baseline} holds preset {baseline['preset']!r}, tonight is {args.preset!r}: "
                          "promote a night of this preset with --update-baseline, or set nightly.baseline")
    comparable = baseline if baseline and baseline["preset"] == args.preset else None
    comparison = compare(cells_of(tonight), cells_of(comparable) if comparable else cells_of({"cells": []}), cfg)
    verdicts = {"failed": comparison.failed, "pipeline_ok": pipeline_ok, "regressed": comparison.regressed_names(),
                **{v: comparison.count("accuracy", v) for v in ("regressed", "improved", "diverged", "missing")}}
    append_history(cfg.history, tonight, verdicts)
    from cifarbench.nightly.report import write_report

    write_report(cfg.report, comparison, tonight, comparable, read_history(cfg.history, args.preset), cfg, pipeline_ok)
    print(f"cifarbench nightly: report in {cfg.report}")
    return _conclude(args, cfg, tonight, comparison, pipeline_ok)


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


def applicable_cells(tree: dict, preset: str) -> list[tuple[str, str]]:
    """The (arch, ablation) cells the preset trains: every cell of params.yaml but the not-applicable ones."""
    from cifarbench.plan import all_cells, load_plan

    plan = load_plan({**tree, "preset": preset})  # an unknown preset is a ConfigError naming the valid ones
    return [(c.arch, c.ablation) for c in all_cells(plan) if not c.not_applicable]


def tonight_runs(tree: dict, preset: str):
    from cifarbench.report.runs import load_runs
    from cifarbench.tracking import tracking_uri

    tracking = parse_section(TrackingConfig, tree.get("tracking"), "tracking")
    return load_runs(tracking_uri(tracking), tracking.experiment, preset)


def _git_commit() -> str:
    found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else "unknown"
