"""Errors a user can act on, and how a command ends. The command line prints a CifarbenchError's message (no
traceback) and exits with status 2; any other error's traceback is printed with the credentials of every URL
in it masked, exit status 1. A command stopped by Ctrl-C exits 130, by SIGTERM 143 (128 + the signal, as a
shell reports it), each with one line on stderr and no traceback."""

from __future__ import annotations

import contextlib
import signal
import threading


class CifarbenchError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(CifarbenchError):
    """params.yaml (or a command-line override) is invalid; the message names the key."""


class DataError(CifarbenchError):
    """The CIFAR-10 archive could not be fetched, verified, extracted or read."""


class Stopped(BaseException):
    """A signal asked the command to stop (SIGTERM: `kill`, a CI job cancelled). A BaseException, like the
    KeyboardInterrupt of Ctrl-C, so no `except Exception` swallows it and every `finally` and `except
    BaseException` cleanup runs on the way out (the executors stop their workers, MLflow runs end KILLED)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stopped_by_sigterm():
    """Within the block, SIGTERM raises Stopped in the main thread instead of killing the process outright
    (which would skip every cleanup). Outside the main thread, where Python cannot install handlers, nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_reporting_errors(func, *args, name: str = "the command") -> int:
    """Call func; a CifarbenchError becomes its message on stderr and exit status 2 (no traceback); Ctrl-C
    and Stopped one line naming `name` and 128 + the signal. Any other exception is printed as Python
    would (traceback, exit status 1), but masked: MLflow's and SQLAlchemy's errors embed the whole tracking
    or storage URL, password included. SystemExit goes on as it is."""
    import sys
    import traceback

    from cifarbench.redact import mask_credentials

    try:
        return func(*args) or 0
    except CifarbenchError as exc:
        print(f"error: {mask_credentials(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {name} stopped by Ctrl-C; rerun to resume", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    except Stopped as exc:
        print(f"terminated: {name} stopped by {signal.Signals(exc.signum).name}; rerun to resume",
              file=sys.stderr, flush=True)
        return 128 + exc.signum
    except Exception as exc:
        print(mask_credentials("".join(traceback.format_exception(exc))), end="", file=sys.stderr, flush=True)
        return 1


def run_as_command(name: str, func, *args) -> int:
    """func(*args) as a command's whole life: SIGTERM stops it through its cleanups (stopped_by_sigterm) and
    every way it can end is an exit status with at most one line on stderr (run_reporting_errors)."""
    with stopped_by_sigterm():
        return run_reporting_errors(func, *args, name=name)


def command_main(prog: str, description: str, configure, run, argv: list[str] | None = None) -> int:
    """A command's arguments (`configure(parser)`), then `run(args)`, as run_as_command. What `cifarbench
    <command>` and each DVC stage script (stages/*.py, through cifarbench.commands) call."""
    return run_as_command(prog, parse_and_run, prog, description, configure, run, argv)


def parse_and_run(prog: str, description: str, configure, run, argv: list[str] | None = None):
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure(parser)
    return run(parser.parse_args(argv))
