"""Small models and data for the engine tests: seconds, not minutes, on two CPU cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cifarbench.data.splits import Split
from cifarbench.engine import TrainConfig
from fake_cifar import make_images


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Autouse in every module that imports it: tiny ops on 2 shared cores run up to 10x slower with two
    OpenMP threads spinning against other processes than with one (measured: 1.4 s vs 0.14 s an epoch)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_split(n: int, seed: int = 0, *, random_labels: bool = False) -> Split:
    """n learnable CIFAR-shaped images (class-coloured stripes + noise), uint8 NHWC; or unlearnable labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = make_images(labels, rng).reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    if random_labels:
        labels = rng.integers(0, 10, n)
    return Split(torch.from_numpy(images), torch.from_numpy(labels).long())


class TinyNet(nn.Module):
    """conv-BN-ReLU-dropout-linear: every kind of parameter and state the engine must handle (~1k params)."""

    def __init__(self, width: int = 8, dropout: float = 0.0, batch_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.norm(self.conv(x))))
        return self.fc(self.drop(x.flatten(1)))


def tiny_model(seed: int = 0, **kwargs) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def train_config(**overrides) -> TrainConfig:
    """A 2-epoch momentum-SGD config; keyword overrides are merged into the raw dict (nested dicts too)."""
    raw = {"epochs": 2, "batch_size": 50, "eval_batch_size": 200, "optimizer": {"name": "momentum", "lr": 0.05}}
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig.model_validate(raw)


def comparable(history: list[dict]) -> list[dict]:
    """History without the wall-clock fields, for run-to-run equality."""
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in history]
