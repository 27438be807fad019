"""`cifarbench report [--open]` and the DVC stage `report` (stages/report.py): the comparison report from the
current MLflow runs (cifarbench.report.build)."""

from __future__ import annotations

import argparse

from cifarbench.commands import params_args
from cifarbench.errors import command_main
from cifarbench.paths import REPORTS

DESCRIPTION = "build reports/comparison.{md,html} from the MLflow runs; --open views it"


def configure(parser: argparse.ArgumentParser) -> None:
    params_args.add_arguments(parser)
    parser.add_argument("--open", action="store_true", help="then open reports/comparison.html in the web browser")


def run(args: argparse.Namespace) -> None:
    import webbrowser

    from cifarbench.report.build import report_stage

    params = params_args.load(args)
    report_stage(params.plan, params.tracking)
    page = (REPORTS / "comparison.html").resolve().as_uri()
    if args.open and webbrowser.open(page):
        return
    print(f"view it: open {page} in a browser, or read {REPORTS / 'comparison.md'} (renders on GitHub)")


def main(argv: list[str] | None = None) -> int:
    """The DVC stage `report` (stages/report.py)."""
    return command_main("stages/report.py", DESCRIPTION, configure, run, argv)
