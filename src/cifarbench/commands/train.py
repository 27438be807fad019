"""`cifarbench train` and the DVC stage `train` (stages/train.py): every unfinished cell of the matrix, on the
executor (cifarbench.pipeline)."""

from __future__ import annotations

import argparse

from cifarbench.commands import params_args
from cifarbench.errors import command_main

DESCRIPTION = "train and test every unfinished cell of the matrix, on the executor"


def configure(parser: argparse.ArgumentParser) -> None:
    params_args.add_arguments(parser)
    parser.add_argument("--prune", action="store_true",
                        help="remove the outputs of cells no longer in the plan (kept by default)")


def run(args: argparse.Namespace) -> None:
    from cifarbench.pipeline import train_stage

    params = params_args.load(args)
    train_stage(params.plan, params.tracking, params.executor, params.data, prune=args.prune)


def main(argv: list[str] | None = None) -> int:
    """The DVC stage `train` (stages/train.py)."""
    return command_main("stages/train.py", DESCRIPTION, configure, run, argv)
