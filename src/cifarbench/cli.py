"""The `cifarbench` command. Each subcommand is a module of cifarbench.commands, imported only when chosen
(and each imports the library only when it runs), so `cifarbench --help` answers without loading torch.

A subcommand module provides `configure(parser)` (its arguments), `run(args) -> int | None` and DESCRIPTION.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cifarbench import __version__
from cifarbench.errors import parse_and_run, run_as_command

# name -> one-line help (each module's DESCRIPTION; repeated here so that --help imports none of them)
COMMANDS: dict[str, str] = {
    "calibrate": "compare candidate budgets of one architecture on validation accuracy (never test)",
    "data": "download, verify and split CIFAR-10 as params.yaml `data` says",
    "doctor": "find and repair what a killed run can leave damaged: dvc.lock, Optuna journal, MLflow store",
    "models": "list the architectures: parameters, FLOPs; --bench measures images/s",
    "nightly": "run the nightly preset, compare with the baseline, exit 1 on regressions",
    "report": "build reports/comparison.{md,html} from the MLflow runs; --open views it",
    "tune": "Optuna-tune every architecture's lr and weight decay (or --arch A), on the executor",
    "train": "train and test every unfinished cell of the matrix, on the executor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifarbench",
        description="Reproducible CIFAR-10 benchmark: architectures x regularization/augmentation ablations.",
        epilog="The pipeline itself runs with `dvc repro`; see README.md. A command stopped by Ctrl-C exits 130, "
               "by SIGTERM 143; rerun it to resume.",
    )
    parser.add_argument("--version", action="version", version=f"cifarbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or the error listing valid commands, then exits
        return 2
    name, rest = argv[0], argv[1:]
    return run_as_command(f"cifarbench {name}", _subcommand, name, rest)


def _subcommand(name: str, argv: list[str]):
    module = importlib.import_module(f"cifarbench.commands.{name}")  # inside run_as_command: Ctrl-C here is clean
    return parse_and_run(f"cifarbench {name}", module.DESCRIPTION, module.configure, module.run, argv)


if __name__ == "__main__":
    sys.exit(main())
