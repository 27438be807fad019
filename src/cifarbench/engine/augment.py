"""Batched, seeded augmentation on the training device (airbench style: whole batches of tensors, no PIL).

The engine holds training images as uint8 NCHW (`to_nchw` of a `Split`'s NHWC, once per fit). A policy
runs in a fixed order whatever its spelling (`flip+crop` == `crop+flip`):

1. pixel stage, on uint8 (a quarter of the bytes of float): `flip`, `crop`. Both are written as
   `index_select` over whole images or 32-byte image rows: PyTorch's generic per-element indexing
   costs ~1 ns a byte on a CPU, and these run 3-13x faster (tests/benchmarks/bench_augment.py);
2. conversion to float, normalized with the CIFAR-10 statistics, NCHW contiguous (the per-channel
   broadcast vectorizes there). A channels_last model takes it as is: converting the input first costs
   ~0.3 ms a batch and made no measurable difference to a ResNet-18/VGG-11/LeNet-5 step;
3. affine stage: `scale` and `rotate` fused into one bilinear `grid_sample` around the image centre;
   uncovered corners become 0 in normalized units, i.e. the dataset's mean colour;
4. `noise`: additive Gaussian, std given in [0, 1] pixel units, not clamped.

Every random draw comes from the `torch.Generator` passed in, so a seed fixes the images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from cifarbench.engine.registry import check_name
from cifarbench.errors import ConfigError

if TYPE_CHECKING:
    from cifarbench.engine.config import AugmentConfig

# Per-channel mean and std of the CIFAR-10 training images on the [0, 1] scale, over all pixels.
# (The std 0.2023, 0.1994, 0.2010 seen in many repos is a per-image std averaged — not the dataset's.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def to_nchw(images: torch.Tensor) -> torch.Tensor:
    """A Split's uint8 (N, H, W, 3) as contiguous uint8 (N, 3, H, W)."""
    return images.permute(0, 3, 1, 2).contiguous()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> normalized float32 (N, 3, H, W), contiguous."""
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    return images.float().mul_(1 / (255 * std)).sub_(mean / std)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """A Split's uint8 (N, H, W, 3) -> the model's normalized float (N, 3, H, W)."""
    return normalize(to_nchw(images))


# --- deterministic ops with explicit parameters (what the tests check) ---------------------------------


def flip_images(images: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the images where `mask` is True along `dim` (3 = horizontal in NCHW, 2 = vertical)."""
    n = len(images)
    both = torch.cat([images, images.flip(dim)])
    return both.index_select(0, torch.arange(n, device=images.device) + n * mask.to(images.device, torch.long))


def crop_images(images: torch.Tensor, shifts: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad NCHW images by `padding` and cut each at offset shifts[i] = (dy, dx) in [0, 2*padding].

    Each output row of w pixels is a contiguous run of the padded image starting at a computed offset:
    one `index_select` over an overlapping view of every possible run.
    """
    n, c, h, w = images.shape
    H, W = h + 2 * padding, w + 2 * padding
    flat = F.pad(images, (padding,) * 4).reshape(-1)
    runs = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
    dev = images.device
    row_starts = (torch.arange(c, device=dev)[:, None] * (H * W) + torch.arange(h, device=dev)[None, :] * W).view(-1)
    image_starts = torch.arange(n, device=dev) * (c * H * W) + shifts[:, 0] * W + shifts[:, 1]
    return runs.index_select(0, (image_starts[:, None] + row_starts).view(-1)).view(n, c, h, w)


def affine_images(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float NCHW images: output point u (normalized coords, centre 0) reads input at theta @ u."""
    zeros = torch.zeros(len(x), 2, 1, device=x.device, dtype=theta.dtype)
    grid = F.affine_grid(torch.cat([theta, zeros], dim=2).to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --- random transforms ------------------------------------------------------------------------------------


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo


@dataclass(frozen=True)
class Flip:
    """Horizontal flip with p=0.5; with `vertical`, an independent vertical flip with p=0.5."""

    vertical: bool = False
    order = 0

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = flip_images(x, torch.rand(len(x), generator=g, device=g.device) < 0.5, dim=3)
        if self.vertical:
            x = flip_images(x, torch.rand(len(x), generator=g, device=g.device) < 0.5, dim=2)
        return x


@dataclass(frozen=True)
class Crop:
    """Zero-pad by `padding` pixels, take a random 32x32 window (torchvision RandomCrop(32, padding))."""

    padding: int = 4
    order = 1

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.padding == 0:
            return x
        shifts = torch.randint(0, 2 * self.padding + 1, (len(x), 2), generator=g, device=g.device)
        return crop_images(x, shifts.to(x.device), self.padding)


@dataclass(frozen=True)
class Scale:
    """Zoom around the centre by a factor uniform in [lo, hi] (> 1 zooms in)."""

    lo: float = 0.8
    hi: float = 1.2
    order = 2

    def matrix(self, n: int, g: torch.Generator) -> torch.Tensor:
        inv = 1 / _uniform(n, self.lo, self.hi, g)
        return torch.diag_embed(torch.stack([inv, inv], dim=1))


@dataclass(frozen=True)
class Rotate:
    """Rotate around the centre by an angle uniform in ±degrees."""

    degrees: float = 15.0
    order = 3

    def matrix(self, n: int, g: torch.Generator) -> torch.Tensor:
        a = _uniform(n, -self.degrees, self.degrees, g) * (math.pi / 180)
        cos, sin = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)


@dataclass(frozen=True)
class Noise:
    """Additive Gaussian noise; `std` in [0, 1] pixel units, applied to normalized images as std / channel std."""

    std: float = 0.05
    order = 4

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        per_channel = torch.tensor(CIFAR10_STD, device=x.device).view(1, 3, 1, 1)
        noise = torch.randn(x.shape, generator=g, device=g.device).to(x.device)
        return x + noise * (self.std / per_channel)


Transform = Flip | Crop | Scale | Rotate | Noise

# name -> factory(cfg) -> transforms. Composite policies list their parts; order is fixed by `Transform.order`.
AUGMENTATIONS: dict[str, Callable[[AugmentConfig], list[Transform]]] = {
    "none": lambda cfg: [],
    "flip": lambda cfg: [Flip(cfg.vflip)],
    "crop": lambda cfg: [Crop(cfg.crop_padding)],
    "scale": lambda cfg: [Scale(*cfg.scale_range)],
    "rotate": lambda cfg: [Rotate(cfg.rotate_degrees)],
    "noise": lambda cfg: [Noise(cfg.noise_std)],
    "standard": lambda cfg: [Crop(cfg.crop_padding), Flip(cfg.vflip)],
    "all": lambda cfg: [
        Flip(cfg.vflip), Crop(cfg.crop_padding), Scale(*cfg.scale_range), Rotate(cfg.rotate_degrees),
        Noise(cfg.noise_std),
    ],
}


def parse_policy(policy: str, error: type[Exception] = ConfigError) -> list[str]:
    """The registered names in a `+`-joined policy; an unknown part raises `error` listing the valid ones."""
    parts = [p.strip() for p in policy.split("+")]
    for part in parts:
        check_name(AUGMENTATIONS, part, "augmentation", error=error)
    return parts


class Augment:
    """A policy ready to run: `augment(uint8 NCHW batch, generator) -> normalized float NCHW batch`."""

    def __init__(self, transforms: list[Transform]):
        unique = {type(t): t for t in transforms}  # `standard+crop` keeps one crop
        ordered = sorted(unique.values(), key=lambda t: t.order)
        self.pixel = [t for t in ordered if isinstance(t, Flip | Crop)]
        self.affine = [t for t in ordered if isinstance(t, Scale | Rotate)]
        self.noise = [t for t in ordered if isinstance(t, Noise)]

    @property
    def names(self) -> list[str]:
        return [type(t).__name__.lower() for t in [*self.pixel, *self.affine, *self.noise]]

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for t in self.pixel:
            images = t(images, g)
        x = normalize(images)
        if self.affine:
            theta = self.affine[0].matrix(len(x), g)
            for t in self.affine[1:]:
                theta = theta @ t.matrix(len(x), g)
            x = affine_images(x, theta.to(x.device))
        for t in self.noise:
            x = t(x, g)
        return x


def build_augment(cfg: AugmentConfig) -> Augment:
    return Augment([t for name in parse_policy(cfg.policy) for t in AUGMENTATIONS[name](cfg)])
