"""Fetching the CIFAR-10 archive from an https/http/file URL or a local path, verified by md5.

The archive is written to a temporary name beside the destination and renamed only after its
checksum matched (`cifarbench.io.atomic_path`), so an interrupted or corrupt download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cifarbench.errors import DataError
from cifarbench.io import atomic_path

CHUNK = 1 << 20  # bytes read per step while downloading and hashing


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(source: str, md5: str, dest: Path, *, progress: bool = True) -> Path:
    """Fetch `source` (URL or path) to `dest` and verify its md5; returns `dest`.

    A `dest` that already holds the expected checksum is kept as it is.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if dest.exists() and md5_of(dest) == md5:
        return dest
    with atomic_path(dest) as partial:
        _copy_source(source, partial, progress=progress)
        got = md5_of(partial)
        if got != md5:
            raise DataError(
                f"checksum mismatch for data.url={source}: expected md5 {md5}, got {got}. "
                "The downloaded file was removed. If the source is a mirror or a rebuilt copy, "
                "set data.md5 in params.yaml to that file's md5."
            )
    return dest


def _copy_source(source: str, target: Path, *, progress: bool) -> None:
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        _download(source, target, progress=progress)
    elif scheme in ("", "local") or len(scheme) == 1:  # a plain path (len 1: a Windows drive letter)
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"data.url={source} is not an existing file; give a path to cifar-10-python.tar.gz or a URL")
        shutil.copyfile(path, target)
    else:
        raise DataError(f"data.url={source}: unsupported scheme {scheme!r}; use https://, http://, file:// or a local path")


def _download(url: str, target: Path, *, progress: bool) -> None:
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download data.url={url}: {reason}. If this machine cannot reach the host, "
            "download cifar-10-python.tar.gz elsewhere and set data.url to its local path (or a mirror URL) "
            "and data.md5 to its checksum in params.yaml."
        ) from None
    with response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="download CIFAR-10", disable=not progress) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DataError(f"download of data.url={url} broke off: {exc}; run the stage again") from None
