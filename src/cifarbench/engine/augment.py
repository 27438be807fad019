"""Batched, seeded augmentation on the training device (airbench style: whole batches of tensors, no PIL).

Images arrive as a `Split` holds them, uint8 (N, 32, 32, 3). A policy runs in a fixed order whatever its
spelling (`flip+crop` == `crop+flip`):

1. pixel stage, on uint8 NHWC (a quarter of the bytes of float): `flip`, `crop` — pure index copies;
2. conversion to float, normalized with the CIFAR-10 statistics, NCHW with channels_last strides (the
   NHWC storage is reused, so `channels_last=False` asks for one extra copy);
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


def to_input(images: torch.Tensor, *, channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalized float32 (N, 3, H, W); channels_last strides unless asked otherwise."""
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).float()  # a view of NHWC storage: already channels_last
    x = x.mul_(1 / (255 * std)).sub_(mean / std)
    return x if channels_last else x.contiguous()


# --- deterministic ops with explicit parameters (what the tests check) ---------------------------------


def flip_images(images: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the images where `mask` is True along `dim` (2 = horizontal in NHWC, 1 = vertical)."""
    out = images.clone()
    out[mask] = images[mask].flip(dim)
    return out


def crop_images(images: torch.Tensor, shifts: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad NHWC images by `padding` and cut each at offset shifts[i] = (dy, dx) in [0, 2*padding]."""
    n, h, w, c = images.shape
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))
    s = padded.stride()
    k = 2 * padding + 1
    # Every candidate window as a strided view (no copy), then one gather of the chosen window per image.
    windows = padded.as_strided((n, k, k, h, w, c), (s[0], s[1], s[2], s[1], s[2], s[3]))
    return windows[torch.arange(n, device=images.device), shifts[:, 0], shifts[:, 1]]


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
        x = flip_images(x, torch.rand(len(x), generator=g, device=g.device) < 0.5, dim=2)
        if self.vertical:
            x = flip_images(x, torch.rand(len(x), generator=g, device=g.device) < 0.5, dim=1)
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
    """A policy ready to run: `augment(uint8 NHWC batch, generator) -> normalized float NCHW batch`."""

    def __init__(self, transforms: list[Transform]):
        unique = {type(t): t for t in transforms}  # `standard+crop` keeps one crop
        ordered = sorted(unique.values(), key=lambda t: t.order)
        self.pixel = [t for t in ordered if isinstance(t, Flip | Crop)]
        self.affine = [t for t in ordered if isinstance(t, Scale | Rotate)]
        self.noise = [t for t in ordered if isinstance(t, Noise)]

    @property
    def names(self) -> list[str]:
        return [type(t).__name__.lower() for t in [*self.pixel, *self.affine, *self.noise]]

    def __call__(self, images: torch.Tensor, g: torch.Generator, *, channels_last: bool = True) -> torch.Tensor:
        for t in self.pixel:
            images = t(images, g)
        x = to_input(images, channels_last=channels_last)
        if self.affine:
            theta = self.affine[0].matrix(len(x), g)
            for t in self.affine[1:]:
                theta = theta @ t.matrix(len(x), g)
            x = affine_images(x, theta.to(x.device))
            x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for t in self.noise:
            x = t(x, g)
        return x


def build_augment(cfg: AugmentConfig) -> Augment:
    return Augment([t for name in parse_policy(cfg.policy) for t in AUGMENTATIONS[name](cfg)])
