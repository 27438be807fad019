"""Credentials out of every message: the one place that decides what of a URL may be shown.

A tracking URI or Optuna storage URL can carry a password (`postgresql://user:secret@db/mlflow`, the
nightly workflow's from a repository secret), and MLflow, SQLAlchemy and requests put the whole URL in their
own errors (`API request to http://user:secret@host/api/... failed`). So every message this package prints,
raises, logs or records that may hold a URL goes through `mask_credentials`: the command line's error
printer (errors.py), the executors' run errors, the report's provenance, the Optuna storage as tagged.
"""

from __future__ import annotations

import re

# scheme://user:password@ -> scheme://user:***@, anywhere in a text. The password runs to the last `@` before
# the host (an unencoded `@` in a password is taken as part of it, as urllib does); it never spans a
# space, `/`, `?` or `#` (the end of a URL's authority).
_USER_INFO = re.compile(r"(?P<user>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^/?#\s]*@")


def mask_credentials(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***:
    'failed: http://bench:s3cret@host/x' -> 'failed: http://bench:***@host/x'. Text without one is returned as is."""
    return _USER_INFO.sub(r"\g<user>:***@", text)
