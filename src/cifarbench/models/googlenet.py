"""GoogLeNet (Inception v1): Szegedy et al., "Going deeper with convolutions", CVPR 2015.

Adapted to 32x32 as in kuangliu/pytorch-cifar: the 7x7/2 conv, pools and 1x1/3x3 convs of the ImageNet
stem (which shrink the image 8x) become one 3x3 conv to 192 channels at full resolution; the nine
Inception modules of the paper's Table 1 follow with two 3x3/2 max pools (32 -> 16 -> 8), then global
average pooling and a linear classifier. The 5x5 branch is two 3x3 convs (as in kuangliu, later
Inception versions), the auxiliary classifiers are dropped, and every conv is followed by batch norm
(Inception v2 practice; `norm` switches it). `pooling` swaps the two down-sampling max pools (not the
branches' stride-1 pools) for average pools or stride-2 convs. 6.17M parameters. `stem_stride=2` makes the stem
conv stride 2 (16 -> 8 -> 4 maps): 4x fewer FLOPs, for CPU presets.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from cifarbench.models.layers import classifier, conv_norm_relu, downsample, scaled
from cifarbench.models.registry import register_model

# Table 1 of the paper, per Inception module: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
# "M" = 3x3 max pool with stride 2.
INCEPTIONS = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",  # 3a, 3b
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),  # 4a-4c
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",  # 4d, 4e
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),  # 5a, 5b
]  # fmt: skip
STEM_CHANNELS = 192


class Inception(nn.Module):
    def __init__(self, cin: int, n1, n3red, n3, n5red, n5, pool_proj, *, norm: str):
        super().__init__()
        conv = partial(conv_norm_relu, norm=norm)
        self.branches = nn.ModuleList([
            conv(cin, n1, 1),
            nn.Sequential(conv(cin, n3red, 1), conv(n3red, n3, 3)),
            nn.Sequential(conv(cin, n5red, 1), conv(n5red, n5, 3), conv(n5, n5, 3)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(cin, pool_proj, 1)),
        ])  # fmt: skip
        self.out_channels = n1 + n3 + n5 + pool_proj

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


class GoogLeNet(nn.Module):
    def __init__(self, *, num_classes: int, width: float, norm: str, pooling: str, dropout: float,
                 stem_stride: int = 1):
        super().__init__()
        cin = scaled(STEM_CHANNELS, width)
        layers = [conv_norm_relu(3, cin, stride=stem_stride, norm=norm)]
        for item in INCEPTIONS:
            if item == "M":
                layers.append(downsample(pooling, cin, 3, 2, 1, norm=norm))
            else:
                layers.append(Inception(cin, *(scaled(c, width) for c in item), norm=norm))
                cin = layers[-1].out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = classifier(cin, num_classes, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(family="googlenet", paper="Szegedy et al. 2015, CVPR", norm="batch", stem_stride=True,
                pooling="max")
def googlenet(**kw):
    return GoogLeNet(**kw)
