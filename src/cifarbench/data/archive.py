"""Reading the CIFAR-10 python archive without trusting it.

- `safe_extract` refuses absolute paths, `..`, links and device files before anything is written
  (and extracts with tarfile's `data` filter as a second line of defence).
- `read_batch` unpickles with a restricted unpickler that only builds what the format holds
  (dicts, lists, str, bytes, ints and numpy arrays), so a crafted pickle cannot run code.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from cifarbench.errors import DataError

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGES_PER_BATCH = 10_000  # in the official archive; smaller batches (test fixtures) are accepted
PIXELS = 3 * 32 * 32  # per image, stored as the R plane, then G, then B, each row-major

# The only globals a CIFAR batch pickle needs: numpy's array reconstruction (module moved in numpy 2), and
# _codecs.encode, with which Python 3 writes bytes at protocol 2 (a pure str -> bytes function).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract `archive` (a .tar.gz) into `dest`, refusing unsafe members; returns the batch folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"{archive} is truncated or not a valid tar.gz ({exc}); delete it and run the download stage again"
        ) from None
    folder = Path(dest) / BATCH_DIR
    missing = [name for name in [*TRAIN_BATCHES, TEST_BATCH, META] if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(f'{BATCH_DIR}/{m}' for m in missing)}: not a complete CIFAR-10 python archive")
    return folder


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: refusing member {member.name!r}: absolute path or '..' would escape the extraction folder")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: refusing member {member.name!r}: links are not part of the CIFAR-10 archive")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {member.name!r}: device, fifo or other special file")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a valid CIFAR-10 batch pickle: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected the CIFAR-10 batch dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one batch file, with shapes checked."""
    batch = load_pickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{path} has no '{key}' entry; keys are {sorted(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS or not len(data):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: 'data' is {shape} {dtype}, expected ({IMAGES_PER_BATCH}, {PIXELS}) uint8")
    labels = np.asarray(batch["labels"])
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: 'labels' must be {len(data)} integers in 0..9, one per image")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> HWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_class_names(folder: Path) -> list[str]:
    meta = load_pickle(folder / META)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{folder / META}: 'label_names' must list the 10 class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
