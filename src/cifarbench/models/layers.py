"""Building blocks shared by the model families: channel scaling, the batch-norm switch, the dropout head."""

from __future__ import annotations

import torch.nn as nn
from torchvision.ops import Conv2dNormActivation


def scaled(channels: int, width: float) -> int:
    """Channels (or hidden units) of a layer at `width` times the paper's size; never fewer than 1."""
    return max(1, round(channels * width))


def norm_layer(batch_norm: bool) -> type[nn.Module]:
    """BatchNorm2d, or nn.Identity (which ignores its arguments) where batch norm is switched off."""
    return nn.BatchNorm2d if batch_norm else nn.Identity


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, *, batch_norm: bool) -> nn.Module:
    """Conv ('same' padding) -> BN -> ReLU. Without BN the conv gets a bias (torchvision's rule)."""
    return Conv2dNormActivation(cin, cout, kernel_size, stride, norm_layer=nn.BatchNorm2d if batch_norm else None)


def dropout_layers(p: float) -> list[nn.Module]:
    """[Dropout(p)], or no module at all when p == 0 (so `dropout=0` leaves nothing to switch off)."""
    return [nn.Dropout(p)] if p > 0 else []


def classifier(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """Flatten -> [Dropout(p)] -> Linear: the head of every family."""
    return nn.Sequential(nn.Flatten(), *dropout_layers(dropout), nn.Linear(in_features, num_classes))
