"""Errors a user can act on. The command line prints their message (no traceback) and exits with status 2;
any other error's traceback is printed with the credentials of every URL in it masked, exit status 1."""


class CifarbenchError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(CifarbenchError):
    """params.yaml (or a command-line override) is invalid; the message names the key."""


class DataError(CifarbenchError):
    """The CIFAR-10 archive could not be fetched, verified, extracted or read."""


def run_reporting_errors(func, *args) -> int:
    """Call func; a CifarbenchError becomes its message on stderr and exit status 2 (no traceback). Any
    other exception is printed as Python would (traceback, exit status 1), but masked: MLflow's and
    SQLAlchemy's errors embed the whole tracking or storage URL, password included."""
    import sys
    import traceback

    from cifarbench.redact import mask_credentials

    try:
        return func(*args) or 0
    except CifarbenchError as exc:
        print(f"error: {mask_credentials(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # KeyboardInterrupt and SystemExit go on as they are
        print(mask_credentials("".join(traceback.format_exception(exc))), end="", file=sys.stderr, flush=True)
        return 1


def command_main(prog: str, description: str, configure, run, argv: list[str] | None = None) -> int:
    """A command's whole life: its arguments (`configure(parser)`), then `run(args)` with errors reported.
    What `cifarbench <command>` and each DVC stage script (stages/*.py) call."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure(parser)
    return run_reporting_errors(run, parser.parse_args(argv))
