"""Augmentation throughput over 50,000 images: the engine's batched tensor path vs torchvision per-sample.

    python tests/benchmarks/bench_augment.py [--repeats 5] [--threads N]

- batched: what `fit` does per step — gather a shuffled batch of uint8 NCHW images (`index_select`),
  run the policy, return normalized float NCHW — for batch 128 (training) and 512.
- torchvision: the textbook CIFAR pipeline, PIL image per sample (as torchvision.datasets.CIFAR10 hands
  them out) through RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, batched by a
  DataLoader with num_workers=0 (workers would take the cores training needs).
- the training throughput of the fastest models (mlp, lenet5) through `fit`, to show the data path
  never limits training.
Medians of repeats, all in this process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cifarbench.data.splits import Split
from cifarbench.engine import CIFAR10_MEAN, CIFAR10_STD, AugmentConfig, TrainConfig, build_augment, fit
from cifarbench.engine.augment import to_nchw
from cifarbench.models import build_model

N = 50_000


class PilDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def torchvision_rate(images: np.ndarray, labels: np.ndarray) -> float:
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])
    loader = DataLoader(PilDataset(images, labels, tf), batch_size=128, shuffle=True, num_workers=0)
    start = time.perf_counter()
    for x, y in loader:
        pass
    return len(labels) / (time.perf_counter() - start)


def batched_rate(images: torch.Tensor, policy: str, batch: int, seed: int) -> float:
    augment = build_augment(AugmentConfig(policy=policy))
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    order = torch.randperm(len(images), generator=g)
    for i in range(0, len(images), batch):
        augment(images.index_select(0, order[i : i + batch]), g)
    return len(images) / (time.perf_counter() - start)


def training_rate(name: str, width: float, split: Split) -> float:
    cfg = TrainConfig.model_validate({"epochs": 1, "optimizer": {"name": "momentum", "lr": 0.01}})
    torch.manual_seed(0)
    result = fit(build_model(name, width=width), split, Split(split.images[:256], split.labels[:256]), cfg, seed=0)
    return result.history[0]["images_per_s"]


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    runs = [fn(seed) for seed in range(repeats)]
    return statistics.median(runs), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images_np = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    labels_np = rng.integers(0, 10, N)
    images = torch.from_numpy(images_np)
    nchw = to_nchw(images)  # once per fit, as the engine does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {N} images, median of {args.repeats}")

    tv, tv_runs = median_of(lambda s: torchvision_rate(images_np, labels_np), max(3, args.repeats // 2))
    print(f"torchvision per-sample standard: {tv:9.0f} img/s  (runs: {', '.join(f'{r:.0f}' for r in tv_runs)})")
    rates = {}
    for policy in ["standard", "none", "flip", "crop", "noise", "rotate", "scale", "all"]:
        for batch in (128, 512):
            rates[policy, batch], runs = median_of(lambda s: batched_rate(nchw, policy, batch, s), args.repeats)
            print(f"batched {policy:9s} batch {batch:3d}: {rates[policy, batch]:9.0f} img/s"
                  f"  ({rates[policy, batch] / tv:5.1f}x torchvision)")

    split = Split(images[:5120], torch.from_numpy(labels_np[:5120]))
    for name, width in [("mlp", 1.0), ("lenet5", 2.0)]:
        train, _ = median_of(lambda s: training_rate(name, width, split), 3)
        print(f"training {name} width {width} (fit, fast paths): {train:7.0f} img/s; batched standard (128) is "
              f"{rates['standard', 128] / train:.1f}x that")


if __name__ == "__main__":
    main()
