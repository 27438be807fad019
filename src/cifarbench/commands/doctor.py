"""`cifarbench doctor`: find and repair what a killed process can leave damaged (cifarbench.doctor): dvc.lock,
the Optuna journal, the MLflow store."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.paths import PARAMS

DESCRIPTION = "find and repair what a killed run can leave damaged: dvc.lock, Optuna journal, MLflow store"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=PARAMS, help="params file (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from cifarbench.doctor import check_stores, repair_lock
    from cifarbench.errors import CifarbenchError
    from cifarbench.params import load

    repaired, problems = [], []
    if (fixed := repair_lock()) is not None:
        repaired.append(fixed)
    if args.params.is_file():
        try:  # the lock is repaired above; the stores are found through the params
            params = load(args.params)
        except CifarbenchError as exc:
            problems.append(str(exc))
        else:
            fixed, found = check_stores(params.tune, params.tracking)
            repaired += fixed
            problems += found
    for line in repaired:
        print(f"repaired: {line}")
    for line in problems:
        print(f"problem: {line}")
    if not repaired and not problems:
        print("doctor: dvc.lock, the Optuna journal and the MLflow store are fine")
    return 1 if problems else 0
