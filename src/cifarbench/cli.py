"""The `cifarbench` command. Each subcommand lives in the module that owns its work and is imported only
when chosen, so `cifarbench --help` answers without loading torch.

A subcommand module provides `configure(parser)` (its arguments) and `run(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cifarbench import __version__
from cifarbench.errors import command_main

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "calibrate": ("cifarbench.calibrate", "compare candidate budgets of one architecture on validation accuracy (never test)"),
    "data": ("cifarbench.data.commands", "download, verify and split CIFAR-10 as params.yaml `data` says"),
    "doctor": ("cifarbench.doctor", "find and repair what a killed run can leave damaged: dvc.lock, Optuna journal, MLflow store"),
    "models": ("cifarbench.models.commands", "list the architectures: parameters, FLOPs; --bench measures images/s"),
    "nightly": ("cifarbench.nightly.command", "run the nightly preset, compare with the baseline, exit 1 on regressions"),
    "report": ("cifarbench.report.build", "build reports/comparison.{md,html} from the MLflow runs; --open views it"),
    "tune": ("cifarbench.tuning", "Optuna-tune every architecture's lr and weight decay (or --arch A), on the executor"),
    "train": ("cifarbench.pipeline", "train and test every unfinished cell of the matrix, on the executor"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifarbench",
        description="Reproducible CIFAR-10 benchmark: architectures x regularization/augmentation ablations.",
        epilog="The pipeline itself runs with `dvc repro`; see README.md.",
    )
    parser.add_argument("--version", action="version", version=f"cifarbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or the error listing valid commands, then exits
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    return command_main(f"cifarbench {name}", COMMANDS[name][1], module.configure, module.run, rest)


if __name__ == "__main__":
    sys.exit(main())
