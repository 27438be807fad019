"""Building blocks shared by the model families: channel scaling, the normalization and pooling switches,
the dropout head."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from torchvision.ops import Conv2dNormActivation

# The `norm` switch: which statistics a conv layer's activations are normalized with (Wu & He 2018, Fig. 2).
NORMS = ("batch", "group", "layer", "instance", "none")
# The `pooling` switch: how a family's down-sampling pools shrink the image. `conv` replaces each pool by a
# learned 3x3 stride-2 conv (+ norm + ReLU), the all-convolutional net of Springenberg et al. 2015.
POOLINGS = ("max", "avg", "conv")
MAX_GROUPS = 32  # Wu & He 2018's default number of groups


def scaled(channels: int, width: float) -> int:
    """Channels (or hidden units) of a layer at `width` times the paper's size; never fewer than 1."""
    return max(1, round(channels * width))


def group_count(channels: int) -> int:
    """Groups of group norm: 32 (Wu & He 2018), fewer where a layer has under 64 channels, so a group keeps
    at least 2 channels (1 channel a group is instance norm): the largest divisor of `channels` <= both."""
    most = max(1, min(MAX_GROUPS, channels // 2))
    return max(d for d in range(1, most + 1) if channels % d == 0)


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(group_count(channels), channels)


def _layer_norm(channels: int) -> nn.Module:
    # Over (C, H, W) of each image: layer norm for conv maps, which nn.LayerNorm can only do at a fixed H, W.
    return nn.GroupNorm(1, channels)


def _instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)  # per image and channel; no running statistics


_NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d, "group": _group_norm, "layer": _layer_norm, "instance": _instance_norm,
    "none": nn.Identity,  # ignores its arguments
}


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """channels -> the normalization module of kind `norm` (one of NORMS; `none` gives nn.Identity)."""
    return _NORM_LAYERS[norm]


def conv_norm_relu(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, *, norm: str) -> nn.Module:
    """Conv ('same' padding) -> norm -> ReLU. Without a norm the conv gets a bias (torchvision's rule)."""
    return Conv2dNormActivation(cin, cout, kernel_size, stride, norm_layer=None if norm == "none" else norm_layer(norm))


def downsample(pooling: str, channels: int, kernel_size: int, stride: int, padding: int = 0, *,
               norm: str) -> nn.Module:
    """A down-sampling pool of the family's (kernel, stride, padding), or its replacement under `pooling`:
    average pooling of the same shape, or a 3x3 stride-2 conv keeping the channels (+ norm + ReLU), which
    gives the same output size as the 2x2/2 pools (on even sizes, all there are here) and 3x3/2 (padding 1)."""
    if pooling == "max":
        return nn.MaxPool2d(kernel_size, stride, padding)
    if pooling == "avg":
        return nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)
    if stride != 2:
        raise ValueError(f"pooling=conv replaces stride-2 pools only, got stride {stride}")
    return conv_norm_relu(channels, channels, 3, 2, norm=norm)


def dropout_layers(p: float) -> list[nn.Module]:
    """[Dropout(p)], or no module at all when p == 0 (so `dropout=0` leaves nothing to switch off)."""
    return [nn.Dropout(p)] if p > 0 else []


def classifier(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """Flatten -> [Dropout(p)] -> Linear: the head of every family."""
    return nn.Sequential(nn.Flatten(), *dropout_layers(dropout), nn.Linear(in_features, num_classes))
