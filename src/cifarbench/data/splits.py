"""Train/validation/test splits: the seeded stratified split, their files, and loading them as tensors.

The validation split is carved out of the 50,000 training images (same number per class, seeded) and
serves early stopping and tuning; the test set is only ever evaluated, never used to choose anything.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cifarbench.data.archive import (BATCH_DIR, META, NOT_CIFAR, TEST_BATCH, TRAIN_BATCHES, read_batch,
                                     read_class_names, safe_extract)
from cifarbench.data.download import md5_of
from cifarbench.errors import DataError
from cifarbench.io import atomic_path, write_json_atomic

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "val", "test")
INFO_FILE = "info.json"


@dataclass(frozen=True)
class Split:
    """One split held as tensors: images (N, 32, 32, 3) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def split_files(folder: Path, name: str) -> tuple[Path, Path]:
    """A split on disk: `<name>-images.npy` (N, 32, 32, 3) uint8 and `<name>-labels.npy` (N,) int64."""
    return Path(folder) / f"{name}-images.npy", Path(folder) / f"{name}-labels.npy"


def load_split(folder: Path, name: str, limit: int | None = None, *, skip: int = 0,
               draw: np.ndarray | None = None) -> Split:
    """Images `skip` .. `skip + limit` of a split (all after `skip` when `limit` is None), or the images at
    the indices `draw` (see `stratified_draw`). The files are memory-mapped: only those images are read."""
    arrays = []
    for path in split_files(folder, name):
        if not path.is_file():
            raise DataError(f"{path} not found: run `dvc repro prepare` first")
        mapped = np.load(path, mmap_mode="r")
        rows = mapped[np.sort(draw)] if draw is not None else mapped[skip : None if limit is None else skip + limit]
        arrays.append(np.array(rows))  # a writable copy of just these images
    return Split(torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1]))


def stratified_draw(folder: Path, name: str, size: int, seed: int) -> np.ndarray:
    """Indices of `size` images of a split drawn at random by `seed`, in the classes' proportions: each seed
    trains on its own subset, so the subset draw is a source of variance the seeds sample (Bouthillier et
    al. 2021), and every cell of one seed shares it (comparisons stay paired)."""
    labels = np.load(split_files(folder, name)[1], mmap_mode="r")
    if size >= len(labels):
        return np.arange(len(labels))
    train, _ = stratified_split(np.asarray(labels), len(labels) - size, seed)
    return train


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), each shuffled, with val holding val_size images in the classes' proportions."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_size < len(labels):
        raise DataError(f"data.val_size={val_size} must be between 1 and the {len(labels)} training images")
    try:
        return train_test_split(np.arange(len(labels)), test_size=val_size, stratify=labels, random_state=seed)
    except ValueError as exc:
        raise DataError(f"data.val_size={val_size} cannot be split by class: {exc}") from None


def prepare_splits(archive: Path, out_dir: Path, *, val_size: int, seed: int) -> dict:
    """Extract `archive`, split it, write each split's .npy files and info.json into `out_dir`; returns the info."""
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="cifar-extract-") as tmp:
        folder = safe_extract(archive, Path(tmp))
        member = f"{archive}: member {BATCH_DIR}/{{}}".format  # what error messages call each file
        try:
            train_parts = [read_batch(folder / name, member(name)) for name in TRAIN_BATCHES]
            test_images, test_labels = read_batch(folder / TEST_BATCH, member(TEST_BATCH))
            classes = read_class_names(folder, member(META))
        except DataError as exc:
            raise DataError(f"{exc}; {NOT_CIFAR.format(archive=archive)}") from None
    images = np.concatenate([p[0] for p in train_parts])
    labels = np.concatenate([p[1] for p in train_parts])
    train_idx, val_idx = stratified_split(labels, val_size, seed)
    splits = {
        "train": (images[train_idx], labels[train_idx]),
        "val": (images[val_idx], labels[val_idx]),
        "test": (test_images, test_labels),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, arrays in splits.items():
        for path, array in zip(split_files(out_dir, name), arrays):
            _save_npy_atomic(path, array)
    train_pixels = splits["train"][0].reshape(-1, 3).astype(np.float64) / 255.0
    info = {
        "archive_md5": md5_of(archive),
        "classes": classes,
        "val_size": val_size,
        "seed": seed,
        "counts": {name: np.bincount(y, minlength=10).tolist() for name, (_, y) in splits.items()},
        "train_mean": train_pixels.mean(axis=0).round(4).tolist(),
        "train_std": train_pixels.std(axis=0).round(4).tolist(),
    }
    write_json_atomic(out_dir / INFO_FILE, info)
    return info


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)
