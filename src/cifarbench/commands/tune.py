"""`cifarbench tune` and the DVC stage `tune` (stages/tune.py): every study of the preset, all their trials
on the executor (cifarbench.tuning)."""

from __future__ import annotations

import argparse

from cifarbench.commands import params_args
from cifarbench.errors import command_main

DESCRIPTION = "Optuna-tune every architecture's lr and weight decay (or --arch A), on the executor"


def configure(parser: argparse.ArgumentParser) -> None:
    params_args.add_arguments(parser)
    parser.add_argument("--arch", action="append",
                        help="tune only this architecture's studies (repeatable; default: all)")


def run(args: argparse.Namespace) -> None:
    from cifarbench.tuning import tune_stage

    params = params_args.load(args)
    tune_stage(params.plan, params.tune, params.tracking, params.executor, args.arch)


def main(argv: list[str] | None = None) -> int:
    """The DVC stage `tune` (stages/tune.py)."""
    return command_main("stages/tune.py", DESCRIPTION, configure, run, argv)
