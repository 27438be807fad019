"""Probes: downloads from servers that trickle, stall, lie about the length, send too much or close early;
a download killed midway; a disk that fills up.

Required outcome every time: a DataError (exit status 2 from the command line) naming data.url or the
folder and what to do, within bounded time, and no partial file left in the destination folder.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from cifarbench.data.download import Limits, fetch_archive, md5_of
from cifarbench.errors import DataError

pytestmark = pytest.mark.faults

FAST = Limits(window_s=0.5, min_bytes=1000, deadline_s=30.0)  # a stall shows within a second


def send_headers(request, length: int | None) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "application/gzip")
    if length is not None:
        request.send_header("Content-Length", str(length))
    request.end_headers()


def trickle(request, stop, *, length=170_498_071, piece=b"\0", every_s=0.02) -> None:
    send_headers(request, length)
    while not stop.wait(every_s):
        request.wfile.write(piece)
        request.wfile.flush()


def only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def fetch_fails(url: str, dest: Path, limits: Limits, pattern: str, within_s: float) -> None:
    start = time.monotonic()
    with pytest.raises(DataError, match=pattern):
        fetch_archive(url, "0" * 32, dest, progress=False, limits=limits)
    assert time.monotonic() - start < within_s
    assert only_files(dest.parent) == []  # no partial archive left behind


def test_trickling_server_is_given_up(serve, tmp_path):
    url = serve(trickle)
    fetch_fails(url, tmp_path / "raw" / "a.tar.gz", FAST, rf"data\.url={re.escape(url)} stalled: fewer than 1,000 bytes in 0\.5 s.*local copy", 5)


def test_silent_server_is_given_up(serve, tmp_path):
    url = serve(lambda req, stop: (send_headers(req, 170_498_071), stop.wait(30)))
    fetch_fails(url, tmp_path / "raw" / "a.tar.gz", FAST, r"stalled", 5)


def test_steady_but_endless_download_hits_the_deadline(serve, tmp_path):
    url = serve(lambda req, stop: trickle(req, stop, piece=b"\0" * 4096, every_s=0.01))
    limits = Limits(window_s=5.0, min_bytes=1, deadline_s=1.0)
    fetch_fails(url, tmp_path / "raw" / "a.tar.gz", limits, r"ran past its 1 s deadline", 6)


def test_content_length_past_the_cap_is_refused_up_front(serve, tmp_path):
    url = serve(lambda req, stop: (send_headers(req, 10**10), stop.wait(30)))  # default limits
    fetch_fails(url, tmp_path / "raw" / "a.tar.gz", Limits(), r"announces 10,000,000,000 bytes.*not the CIFAR-10 python archive; check data\.url", 5)


def test_body_past_the_cap_is_cut_off(serve, tmp_path):
    def endless(req, stop):
        send_headers(req, None)  # no Content-Length: nothing announces the size
        for _ in range(64):
            req.wfile.write(b"\0" * 65536)

    url = serve(endless)
    limits = Limits(max_bytes=1 << 20, window_s=5.0, min_bytes=1)
    fetch_fails(url, tmp_path / "raw" / "a.tar.gz", limits, r"sent more than 1,048,576 bytes.*check data\.url", 10)


def test_server_closing_early_is_reported_as_broken_off(serve, tmp_path):
    url = serve(lambda req, stop: (send_headers(req, 2_000_000), req.wfile.write(b"\0" * 1000)))
    fetch_fails(url, tmp_path / "raw" / "a.tar.gz", FAST, r"broke off after 1,000 of 2,000,000 bytes; run the stage again", 5)


def test_length_shorter_than_the_body_fails_the_checksum(serve, cifar_archive, tmp_path):
    archive, md5 = cifar_archive
    body = archive.read_bytes()
    url = serve(lambda req, stop: (send_headers(req, len(body) // 2), req.wfile.write(body)))
    dest = tmp_path / "raw" / "a.tar.gz"
    with pytest.raises(DataError, match=rf"expected md5 {md5}.*data\.md5"):
        fetch_archive(url, md5, dest, progress=False, limits=FAST)
    assert only_files(dest.parent) == []


def test_killed_download_leaves_nothing_after_the_next_run(serve, cifar_archive, tmp_path):
    """SIGKILL in the middle of a download leaves its partial file; the next fetch removes it."""
    url = serve(lambda req, stop: trickle(req, stop, piece=b"\0" * 65536, every_s=0.05))
    dest = tmp_path / "raw" / "a.tar.gz"
    code = f"from cifarbench.data.download import fetch_archive; fetch_archive({url!r}, '0' * 32, {str(dest)!r}, progress=False)"
    child = subprocess.Popen([sys.executable, "-c", code])
    partial = dest.with_name(f".{dest.name}.{child.pid}.tmp")
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 0):
        assert child.poll() is None and time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert partial.exists()  # what a kill leaves behind
    archive, md5 = cifar_archive
    fetch_archive(str(archive), md5, dest, progress=False)
    assert only_files(dest.parent) == ["a.tar.gz"] and md5_of(dest) == md5


def test_a_live_downloads_partial_file_is_left_alone(cifar_archive, tmp_path):
    archive, md5 = cifar_archive
    dest = tmp_path / "a.tar.gz"
    other = tmp_path / f".a.tar.gz.{os.getppid()}.tmp"  # another live process, downloading the same file
    other.write_bytes(b"partial")
    fetch_archive(str(archive), md5, dest, progress=False)
    assert other.read_bytes() == b"partial" and md5_of(dest) == md5


FULL_DISK_CHILD = textwrap.dedent("""
    import resource, sys
    limit = 256 * 1024  # bytes: any file larger than this fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from cifarbench.cli import main
    sys.exit(main(["data", "--step", "download"]))
""")


@pytest.mark.parametrize("via", ["http", "path"])
def test_full_disk_is_reported_as_a_full_disk(via, cifar_archive, http_root, tmp_path):
    archive, md5 = cifar_archive
    assert archive.stat().st_size > 256 * 1024
    root, base = http_root
    (root / "c10.tar.gz").write_bytes(archive.read_bytes())
    url = f"{base}/c10.tar.gz" if via == "http" else str(archive)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"url": url, "md5": md5}}))
    done = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    raw = tmp_path / "data" / "raw"
    assert done.returncode == 2, done.stderr
    assert f"disk full while writing the archive into {raw}" in done.stderr and "free at least 170 MB" in done.stderr
    assert "Traceback" not in done.stderr
    assert only_files(raw) == []
