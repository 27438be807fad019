"""`cifarbench calibrate`: candidate budgets of one architecture trained on train and compared on validation
only, the evidence written to JSON (cifarbench.calibrate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifarbench.commands import params_args

DESCRIPTION = "compare candidate budgets of one architecture on validation accuracy (never test)"


def configure(parser: argparse.ArgumentParser) -> None:
    params_args.add_arguments(parser)
    parser.add_argument("--arch", required=True, help="the architecture whose budget is calibrated")
    parser.add_argument("--candidate", action="append", required=True,
                        help="one candidate budget: comma-separated model.KEY=VALUE / train.KEY=VALUE changes to the "
                             "architecture's budget in the current preset; '' = as it is (repeatable)")
    parser.add_argument("--ablation", action="append", default=[],
                        help="also train this ablation per candidate (repeatable; the baseline always runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per run (default: 0 1 2)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (commit it beside the choice)")


def run(args: argparse.Namespace) -> None:
    import datetime

    from cifarbench.calibrate import calibrate, print_summary
    from cifarbench.io import write_json_atomic
    from cifarbench.tracking.tags import provenance  # commit, CPU and library versions of the evidence

    params = params_args.load(args)  # --preset: the preset whose budget is changed
    out = calibrate(params.plan, params.executor, args.arch, args.candidate, args.ablation, args.seeds)
    out["command"] = "cifarbench calibrate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["calibrate"] else ""
    out["made"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out["provenance"] = provenance()
    print_summary(out)
    if args.out:
        write_json_atomic(args.out, out)
        print(f"written: {args.out}")
