"""Probes: archives that are not CIFAR-10 and try to hurt: a compression bomb, 10^5 members, a batch file
given twice, pickles calling codecs or other globals, float or out-of-range labels, non-UTF-8 class names.

Setup: a small archive in the official layout (tests/fake_cifar.py) with one member changed or added.
Required outcome: `prepare_splits` raises a DataError naming the archive and the member and saying it is
not the CIFAR-10 archive (delete it and download again, or check data.url); nothing is extracted or
written.
"""

from __future__ import annotations

import _codecs
import gzip
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from cifarbench.data.archive import MAX_UNPACKED_BYTES, safe_extract
from cifarbench.data.splits import prepare_splits
from cifarbench.errors import DataError
from fake_cifar import CLASS_NAMES, make_images, write_archive

pytestmark = pytest.mark.faults

NOT_CIFAR = r"not the CIFAR-10 python archive: delete .* download stage again, or check data\.url"


def batch(labels: list | None = None, label=b"training batch") -> bytes:
    """A protocol-2 batch pickle of 100 images, with `labels` and `label` (the unchecked batch_label) as given."""
    truth = np.arange(100) % 10
    entries = {b"batch_label": label, b"labels": truth.tolist() if labels is None else labels,
               b"data": make_images(truth, np.random.default_rng(0))}
    return pickle.dumps(entries, protocol=2)


class Reduce:
    """Pickles as a call of `func(*args)`: what a hostile batch would smuggle in."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def refused(archive: Path, tmp_path: Path, member: str, why: str) -> None:
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=rf"{archive}: member 'cifar-10-batches-py/{member}'.*{why}.*{NOT_CIFAR}|"
                                        rf"{archive}: member cifar-10-batches-py/{member}.*{why}.*{NOT_CIFAR}"):
        prepare_splits(archive, out, val_size=100, seed=0)
    assert not out.exists()


class Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_compression_bomb_is_refused_before_it_is_inflated(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    size = MAX_UNPACKED_BYTES + (44 << 20)  # 300 MiB of zeros in 1.4 MB
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = size
        tar.addfile(info, Zeros(size))
    assert archive.stat().st_size < size / 100
    dest = tmp_path / "extract"
    with pytest.raises(DataError, match=r"member 'cifar-10-batches-py/data_batch_1' takes the unpacked size past "
                                        rf"268,435,456 bytes \(a compression bomb\?\); .*{NOT_CIFAR}"):
        safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.iterdir())  # refused from its header: nothing was written
    refused(archive, tmp_path, "data_batch_1", "compression bomb")


def test_a_hundred_thousand_members_are_refused(tmp_path):
    archive = tmp_path / "many.tar.gz"
    with gzip.open(archive, "wb") as out:  # empty files: 512-byte headers only, 51 MB unpacked
        out.write(b"".join(tarfile.TarInfo(f"cifar-10-batches-py/f{i:06d}").tobuf() for i in range(100_000)))
        out.write(bytes(2 * tarfile.BLOCKSIZE))  # end of archive
    dest = tmp_path / "extract"
    with pytest.raises(DataError, match=rf"more than 64 members \(at 'cifar-10-batches-py/f000064'\);.*{NOT_CIFAR}"):
        safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.iterdir())


def test_a_batch_file_given_twice_is_refused(tmp_path):
    """tar extracts the later copy over the first: a second data_batch_1 could swap the data unseen."""
    second = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    second.size = 10
    archive = tmp_path / "dup.tar.gz"
    write_archive(archive, extra=[second])
    refused(archive, tmp_path, "data_batch_1", "appears twice")


@pytest.mark.parametrize("func, args, why", [
    (_codecs.encode, (b"x" * 1000, "zlib_codec"), r"_codecs\.encode with codec 'zlib_codec' is not allowed"),
    (_codecs.encode, ("eHg=", "base64_codec"), r"codec 'base64_codec' is not allowed"),
    (zlib.decompress, (zlib.compress(b"\0" * 10_000),), r"global zlib\.decompress is not allowed"),
    (os.system, ("true",), r"global (posix|os)\.system is not allowed"),
])
def test_pickles_calling_other_functions_are_refused(func, args, why, tmp_path):
    archive = tmp_path / "reduce.tar.gz"
    write_archive(archive, replace={"data_batch_2": batch(label=Reduce(func, *args))})
    refused(archive, tmp_path, "data_batch_2", why)


@pytest.mark.parametrize("labels, why", [
    ([float(i % 10) for i in range(100)], "integers in 0..9"),
    ([i % 10 + 0.5 for i in range(100)], "integers in 0..9"),
    ([10] * 100, "integers in 0..9"),
    ([-1] + [i % 10 for i in range(99)], "integers in 0..9"),
    ([i % 10 for i in range(99)], "100 integers"),
])
def test_bad_labels_are_refused(labels, why, tmp_path):
    archive = tmp_path / "labels.tar.gz"
    write_archive(archive, replace={"test_batch": batch(labels)})
    refused(archive, tmp_path, "test_batch", why)


def test_non_utf8_class_names_are_refused(tmp_path):
    names = [b"\xff\xfeplane", *(c.encode() for c in CLASS_NAMES[1:])]
    archive = tmp_path / "meta.tar.gz"
    write_archive(archive, replace={"batches.meta": pickle.dumps({b"label_names": names}, protocol=2)})
    refused(archive, tmp_path, "batches.meta", "not UTF-8 text")
