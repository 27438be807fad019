"""Errors a user can act on. The command line prints their message (no traceback) and exits with status 2."""


class CifarbenchError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(CifarbenchError):
    """params.yaml (or a command-line override) is invalid; the message names the key."""


class DataError(CifarbenchError):
    """The CIFAR-10 archive could not be fetched, verified, extracted or read."""


def run_reporting_errors(func, *args) -> int:
    """Call func; a CifarbenchError becomes its message on stderr and exit status 2 (no traceback)."""
    import sys

    try:
        return func(*args) or 0
    except CifarbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def command_main(prog: str, description: str, configure, run, argv: list[str] | None = None) -> int:
    """A command's whole life: its arguments (`configure(parser)`), then `run(args)` with errors reported.
    What `cifarbench <command>` and each DVC stage script (stages/*.py) call."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure(parser)
    return run_reporting_errors(run, parser.parse_args(argv))
