"""Reading the CIFAR-10 python archive without trusting it.

- `safe_extract` refuses absolute paths, `..`, links, device files, duplicate names, too many members and
  too many unpacked bytes (a compression bomb) before anything is written, reading the headers one at a
  time (and extracts with tarfile's `data` filter as a second line of defence).
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
MAX_MEMBERS = 64  # the official archive has 9: the folder, 7 pickles and readme.html
MAX_UNPACKED_BYTES = 256 << 20  # 268 MB; the official members unpack to 186 MB
NOT_CIFAR = ("this is not the CIFAR-10 python archive: delete {archive} and run the download stage again, "
             "or check data.url and data.md5 in params.yaml")

# The only globals a CIFAR batch pickle needs: numpy's array reconstruction (module moved in numpy 2), and
# _codecs.encode, with which Python 3 writes bytes at protocol 2 (allowed for latin1 only: see _latin1).
_ALLOWED_GLOBALS = {
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
            members = _checked_members(tar, archive)
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


def _checked_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every member, checked as its header is read: iterating reads one header at a time, so a bomb (a
    member announcing gigabytes of zeros) is refused before any of it is inflated."""
    members, names, unpacked = [], set(), 0
    for member in tar:
        _check_member(member, archive)
        name = str(PurePosixPath(member.name))
        unpacked += member.size
        if len(members) == MAX_MEMBERS:
            raise DataError(f"{archive}: more than {MAX_MEMBERS} members (at {name!r}); " + NOT_CIFAR.format(archive=archive))
        if name in names:
            raise DataError(f"{archive}: member {name!r} appears twice; " + NOT_CIFAR.format(archive=archive))
        if unpacked > MAX_UNPACKED_BYTES:
            raise DataError(f"{archive}: member {name!r} takes the unpacked size past {MAX_UNPACKED_BYTES:,} bytes "
                            "(a compression bomb?); " + NOT_CIFAR.format(archive=archive))
        members.append(member)
        names.add(name)
    return members


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: refusing member {member.name!r}: absolute path or '..' would escape the extraction folder")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: refusing member {member.name!r}: links are not part of the CIFAR-10 archive")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {member.name!r}: device, fifo or other special file")


def _latin1(text, encoding="latin1") -> bytes:
    """`_codecs.encode(str, "latin1")`, how Python 3 pickles bytes at protocol 2. Any other codec
    (zlib_codec, base64_codec, ...) turns the call into a decompressor or worse, and is refused."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed in a CIFAR-10 batch")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def load_pickle(path: Path, name: str | None = None) -> dict:
    """The batch dict in `path`; `name` (default: the path) is what error messages call the file."""
    name = name or str(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{name} is not a valid CIFAR-10 batch pickle: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name} holds a {type(obj).__name__}, expected the CIFAR-10 batch dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one batch file, with shapes checked."""
    batch = load_pickle(path, name)
    path = name or path  # what the messages below call it
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


def read_class_names(folder: Path, name: str | None = None) -> list[str]:
    name = name or str(folder / META)
    names = load_pickle(folder / META, name).get("label_names")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{name}: 'label_names' must list the 10 class names")
    try:
        return [n.decode() if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: 'label_names' holds a name that is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
