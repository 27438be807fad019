"""Fetching the CIFAR-10 archive from an https/http/file URL or a local path, verified by md5.

The archive is written to a temporary name beside the destination and renamed only after its
checksum matched (`cifarbench.io.atomic_path`), so an interrupted or corrupt download never leaves a file that looks complete;
the temporary of a killed download is removed by the next fetch. A download is given up (`Limits`) when the
server stalls or trickles, runs past a deadline, or sends more than the archive could be; a full disk is
reported as such, naming the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cifarbench.errors import DataError
from cifarbench.io import atomic_path, remove_stale_temps

CHUNK = 1 << 20  # bytes read per step while downloading and hashing
CIFAR10_BYTES = 170_498_071  # size of the official cifar-10-python.tar.gz
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, file size limit (ulimit -f), quota


@dataclass(frozen=True)
class Limits:
    """When a download is given up. A slow link still finishes: the official archive at the minimum rate
    (4 KiB/s) would take 11 h, so only a stalled or trickling server trips `min_bytes`."""

    max_bytes: int = 2 * CIFAR10_BYTES  # a body (or a Content-Length) past this is not the CIFAR-10 archive
    window_s: float = 60.0  # seconds; also the per-read socket timeout
    min_bytes: int = 256 * 1024  # bytes that must arrive in every window (~4 KiB/s)
    deadline_s: float = 6 * 3600.0  # seconds for the whole download (~8 KiB/s for the official archive)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(source: str, md5: str, dest: Path, *, progress: bool = True, limits: Limits = Limits()) -> Path:
    """Fetch `source` (URL or path) to `dest` and verify its md5; returns `dest`.

    A `dest` that already holds the expected checksum is kept as it is.
    """
    dest = Path(dest)
    md5 = md5.lower()
    remove_stale_temps(dest)  # a killed download's partial file (up to 170 MB)
    if dest.exists() and md5_of(dest) == md5:
        return dest
    with atomic_path(dest) as partial, _disk_full_is_reported(dest.parent):
        _copy_source(source, partial, progress=progress, limits=limits)
        got = md5_of(partial)
        if got != md5:
            raise DataError(
                f"checksum mismatch for data.url={source}: expected md5 {md5}, got {got}. "
                "The downloaded file was removed. If the source is a mirror or a rebuilt copy, "
                "set data.md5 in params.yaml to that file's md5."
            )
    return dest


@contextlib.contextmanager
def _disk_full_is_reported(folder: Path):
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise DataError(
            f"disk full while writing the archive into {folder.resolve()} ({exc.strerror}): free at least "
            f"{CIFAR10_BYTES / 1e6:.0f} MB there (or raise the file size limit, `ulimit -f`), then run the stage again"
        ) from None


def _copy_source(source: str, target: Path, *, progress: bool, limits: Limits) -> None:
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        _download(source, target, progress=progress, limits=limits)
    elif scheme in ("", "local") or len(scheme) == 1:  # a plain path (len 1: a Windows drive letter)
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"data.url={source} is not an existing file; give a path to cifar-10-python.tar.gz or a URL")
        if path.stat().st_size > limits.max_bytes:
            raise DataError(f"data.url={source} holds {path.stat().st_size:,} bytes (the CIFAR-10 archive is "
                            f"{CIFAR10_BYTES:,}): not the CIFAR-10 python archive; check data.url")
        shutil.copyfile(path, target)
    else:
        raise DataError(f"data.url={source}: unsupported scheme {scheme!r}; use https://, http://, file:// or a local path")


def _download(url: str, target: Path, *, progress: bool, limits: Limits) -> None:
    try:
        response = urllib.request.urlopen(url, timeout=limits.window_s)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download data.url={url}: {reason}. If this machine cannot reach the host, "
            "download cifar-10-python.tar.gz elsewhere and set data.url to its local path (or a mirror URL) "
            "and data.md5 to its checksum in params.yaml."
        ) from None
    with response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        if total and total > limits.max_bytes:
            raise DataError(f"data.url={url} announces {total:,} bytes, more than {limits.max_bytes:,} (the CIFAR-10 "
                            f"archive is {CIFAR10_BYTES:,}): not the CIFAR-10 python archive; check data.url")
        started = time.monotonic()
        # A bar on a terminal only (disable=None: off when stderr is no tty); a log gets one line at the end,
        # not a carriage-return redraw per chunk.
        with tqdm(total=total, unit="B", unit_scale=True, desc="download CIFAR-10",
                  disable=None if progress else True) as bar:
            received = _stream(response, out, url, limits, bar.update)
        if progress and bar.disable:
            print(f"download CIFAR-10: {received / 1e6:.1f} MB in {time.monotonic() - started:.0f} s", flush=True)
    if total and received < total:  # read1 returns b"" at a closed connection, never IncompleteRead
        raise DataError(f"download of data.url={url} broke off after {received:,} of {total:,} bytes; run the stage again")


def _stream(response, out, url: str, limits: Limits, on_bytes) -> int:
    """Copy the body to `out`, giving up on a stall, a trickle, the deadline or too many bytes; returns the
    number of bytes copied."""
    read = getattr(response, "read1", response.read)  # read1: what has arrived, so the clock is checked
    start = window_start = time.monotonic()
    total = in_window = 0
    while chunk := _read(read, url, limits):
        total, in_window = total + len(chunk), in_window + len(chunk)
        if total > limits.max_bytes:
            raise DataError(f"data.url={url} sent more than {limits.max_bytes:,} bytes (the CIFAR-10 archive is "
                            f"{CIFAR10_BYTES:,}): not the CIFAR-10 python archive; check data.url")
        out.write(chunk)
        on_bytes(len(chunk))
        now = time.monotonic()
        if now - start > limits.deadline_s:
            raise DataError(f"download of data.url={url} ran past its {limits.deadline_s:.0f} s deadline; "
                            "use a faster mirror or a local copy (data.url may be a path)")
        if now - window_start >= limits.window_s:
            if in_window < limits.min_bytes:
                raise _stalled(url, limits)
            window_start, in_window = now, 0
    return total


def _read(read, url: str, limits: Limits) -> bytes:
    try:
        return read(CHUNK)
    except TimeoutError:
        raise _stalled(url, limits) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"download of data.url={url} broke off: {exc!r}; run the stage again") from None


def _stalled(url: str, limits: Limits) -> DataError:
    return DataError(f"download of data.url={url} stalled: fewer than {limits.min_bytes:,} bytes in {limits.window_s:g} s; "
                     "run the stage again later, or use a mirror or a local copy (data.url may be a path)")
