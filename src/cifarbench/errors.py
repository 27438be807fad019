"""Errors a user can act on. The command line prints their message (no traceback) and exits with status 2."""


class CifarbenchError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(CifarbenchError):
    """params.yaml (or a command-line override) is invalid; the message names the key."""


class DataError(CifarbenchError):
    """The CIFAR-10 archive could not be fetched, verified, extracted or read."""
