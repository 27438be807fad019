"""Small CIFAR-10 archives in the official layout (protocol-2 pickles of dicts with b'data', b'labels'...),
built for tests so the real download -> verify -> extract -> prepare code runs offline.

Classes are made learnable: class k has its own colour and stripe frequency, plus noise, so a tiny model
gets well above chance in a few epochs.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 in CIFAR's plane layout; class-dependent colour and stripes."""
    n = len(labels)
    palette = np.array([[(k * 37) % 256, (k * 91 + 60) % 256, (k * 151 + 120) % 256] for k in range(10)], dtype=np.float32)
    rows = np.arange(32, dtype=np.float32)
    stripes = np.sin(rows[None, :] * (labels[:, None] + 1) * np.pi / 16)  # (N, 32): frequency by class
    img = palette[labels][:, :, None, None] * 0.6 + 50 * stripes[:, None, :, None]  # (N, 3, 32, 1)
    img = np.broadcast_to(img, (n, 3, 32, 32)) + rng.normal(0, 25, size=(n, 3, 32, 32))
    return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072)


def batch_bytes(n: int, rng: np.random.Generator, name: str) -> bytes:
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    batch = {
        b"batch_label": name.encode(),
        b"labels": labels.tolist(),
        b"data": make_images(labels, rng),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return pickle.dumps(batch, protocol=2)


def meta_bytes() -> bytes:
    return pickle.dumps({b"num_cases_per_batch": 10000, b"label_names": [c.encode() for c in CLASS_NAMES], b"num_vis": 3072}, protocol=2)


def write_archive(path: Path, *, per_batch: int = 100, test_size: int = 200, seed: int = 0,
                  omit: tuple[str, ...] = (), replace: dict[str, bytes] | None = None,
                  extra: list[tarfile.TarInfo] | None = None) -> str:
    """Write a CIFAR-format .tar.gz at `path`; returns its md5.

    omit: member names (e.g. "data_batch_3") left out; replace: name -> raw bytes instead of the real batch;
    extra: additional TarInfo members (links, traversal paths) appended as they are.
    """
    rng = np.random.default_rng(seed)
    members = {f"data_batch_{i}": batch_bytes(per_batch, rng, f"training batch {i} of 5") for i in range(1, 6)}
    members["test_batch"] = batch_bytes(test_size, rng, "testing batch 1 of 1")
    members["batches.meta"] = meta_bytes()
    members.update(replace or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for name, data in members.items():
            if name in omit:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return hashlib.md5(path.read_bytes()).hexdigest()
