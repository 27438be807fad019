"""Augmentations: shape/dtype, determinism under a seed, and each transform doing what it says."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cifarbench.engine import AUGMENTATIONS, CIFAR10_MEAN, CIFAR10_STD, AugmentConfig, build_augment, to_input
from cifarbench.engine.augment import Crop, Flip, Noise, affine_images, crop_images, normalize, parse_policy
from cifarbench.errors import ConfigError
from engine_helpers import one_torch_thread  # noqa: F401 (autouse fixture)

POLICIES = sorted(AUGMENTATIONS) + ["crop+flip+noise", "rotate+scale"]


def images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 NCHW, the layout the engine augments."""
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def run(policy: str, x: torch.Tensor, seed: int = 0, **cfg) -> torch.Tensor:
    return build_augment(AugmentConfig(policy=policy, **cfg))(x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("policy", POLICIES)
def test_shape_dtype_and_seeded(policy):
    x = images()
    out = run(policy, x)
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    assert out.is_contiguous()
    assert torch.equal(out, run(policy, x))  # same seed, same images
    if policy != "none":
        assert not torch.equal(out, run(policy, x, seed=1))
    assert x.dtype == torch.uint8 and torch.equal(x, images())  # input untouched


def test_to_input_is_the_nchw_normalization_of_a_split_layout():
    x = images()
    assert torch.equal(to_input(x.permute(0, 2, 3, 1)), normalize(x))


def test_normalization_uses_cifar10_statistics():
    assert CIFAR10_STD == pytest.approx((0.247, 0.243, 0.261), abs=1e-3)
    mean_pixel = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=torch.uint8).expand(1, 32, 32, 3)
    assert to_input(mean_pixel).abs().max() < 0.01
    white = to_input(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8))
    for c in range(3):
        assert white[0, c, 0, 0].item() == pytest.approx((1 - CIFAR10_MEAN[c]) / CIFAR10_STD[c], rel=1e-5)


def test_none_is_plain_normalization():
    x = images()
    assert torch.equal(run("none", x), normalize(x))


def test_flip_is_a_horizontal_flip_of_about_half():
    x = images(400)
    out, plain = run("flip", x), normalize(x)
    flipped = torch.tensor([torch.equal(o, p.flip(-1)) for o, p in zip(out, plain)])
    kept = torch.tensor([torch.equal(o, p) for o, p in zip(out, plain)])
    assert (flipped ^ kept).all()  # each image is either itself or its mirror
    assert 150 < flipped.sum() < 250


def test_vflip_adds_vertical_flips():
    x = images(200)
    out, plain = run("flip", x, vflip=True), normalize(x)
    variants = lambda p: [p, p.flip(-1), p.flip(-2), p.flip(-1).flip(-2)]  # noqa: E731
    kinds = [next(k for k, v in enumerate(variants(p)) if torch.equal(o, v)) for o, p in zip(out, plain)]
    assert set(kinds) == {0, 1, 2, 3}


@pytest.mark.parametrize("padding", [1, 4])
def test_crop_keeps_content_shifted_by_at_most_padding(padding):
    x = images(32)
    out = Crop(padding)(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (padding,) * 4)
    seen = set()
    for o, p in zip(out, padded):
        shifts = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(o, p[:, dy : dy + 32, dx : dx + 32])
        ]
        assert len(shifts) == 1  # random content: exactly one window matches
        seen.add(shifts[0])
    assert len(seen) > 5


def test_crop_matches_slicing_the_padded_image():
    x, shifts = images(16), torch.randint(0, 7, (16, 2), generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (3,) * 4)
    expected = torch.stack([p[:, dy : dy + 32, dx : dx + 32] for p, (dy, dx) in zip(padded, shifts.tolist())])
    assert torch.equal(crop_images(x, shifts, 3), expected)


def test_crop_at_centre_is_identity():
    x = images(4)
    assert torch.equal(crop_images(x, torch.full((4, 2), 4), 4), x)
    assert torch.equal(Crop(0)(x, torch.Generator()), x)


def test_noise_has_requested_std_in_pixel_units():
    x = torch.full((256, 3, 32, 32), 128, dtype=torch.uint8)
    out = Noise(0.05)(normalize(x), torch.Generator().manual_seed(0))
    pixel_noise = (out - normalize(x)) * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert pixel_noise.mean().abs() < 1e-3
    assert pixel_noise.std().item() == pytest.approx(0.05, rel=0.01)


def test_rotation_by_90_degrees_is_rot90():
    x = torch.rand(2, 3, 32, 32)
    a = math.pi / 2
    theta = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]).expand(2, 2, 2)
    out = affine_images(x, theta)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5) or torch.allclose(
        out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5
    )


def test_zoom_in_by_two_magnifies_the_centre():
    x = torch.rand(2, 3, 32, 32)
    out = affine_images(x, torch.eye(2).expand(2, 2, 2) / 2)  # input read at half the distance: 2x zoom
    expected = F.interpolate(x[:, :, 8:24, 8:24], scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(out[:, :, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1], atol=1e-5)


def test_zero_rotation_and_unit_scale_change_nothing():
    x = images(8)
    out = run("rotate+scale", x, rotate_degrees=0.0, scale_range=(1.0, 1.0))
    assert torch.allclose(out, normalize(x), atol=1e-5)


def test_rotation_keeps_the_centre_and_blanks_corners_to_the_mean():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    out = run("rotate", x, rotate_degrees=45.0)
    assert torch.allclose(out[:, :, 14:18, 14:18], normalize(x)[:, :, 14:18, 14:18], atol=1e-4)
    assert (out[:, :, 0, 0].abs() < normalize(x)[:, :, 0, 0].abs()).any()  # some corner fell outside


def test_order_of_a_composition_does_not_matter():
    x = images()
    assert torch.equal(run("crop+flip", x), run("flip+crop", x))
    assert torch.equal(run("standard", x), run("crop+flip", x))
    assert torch.equal(run("standard+crop", x), run("standard", x))


def test_names_and_unknown_names():
    assert parse_policy("crop+flip+noise") == ["crop", "flip", "noise"]
    assert build_augment(AugmentConfig(policy="all")).names == ["flip", "crop", "scale", "rotate", "noise"]
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'; valid: all, crop"):
        parse_policy("crop+blur")
    with pytest.raises(ValueError, match="valid: all"):
        AugmentConfig(policy="cutout")


def test_flip_draws_only_from_the_generator():
    x = images()
    torch.manual_seed(0)
    a = Flip()(x, torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    assert torch.equal(a, Flip()(x, torch.Generator().manual_seed(3)))
