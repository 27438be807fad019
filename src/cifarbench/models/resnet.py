"""ResNets: He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016.

Two adaptations to 32x32 inputs, both from the paper or common practice:
- resnet18/34/50: the ImageNet stages (64-128-256-512 channels, torchvision's BasicBlock/Bottleneck) with
  a 3x3 stride-1 stem and no max pool (as in kuangliu/pytorch-cifar), so the 4 stages see 32, 16, 8, 4
  pixels instead of the 7x7/2 stem and pool shrinking the image 4x at once. 1x1 projection shortcuts.
- resnet20/32/44/56/110: the paper's own CIFAR networks (Section 4.2): 3 stages of 16-32-64 channels,
  n = (depth - 2) / 6 basic blocks each, parameter-free shortcuts (option A: subsample, zero-pad channels).
`norm` switches batch norm for another normalization (or none); without one, the blocks' convs stay
bias-free (torchvision's blocks) and only the stem gets a bias. There are no pools to switch.
`stem_stride=2` makes the stem conv stride 2, so every stage sees half the pixels per side (4x fewer FLOPs):
the CPU presets' ResNet-18 (3.3x faster training at width 0.125, measured on 1 core).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

from cifarbench.models.layers import classifier, conv_norm_relu, norm_layer, scaled
from cifarbench.models.registry import register_model

register = register_model(family="resnet", paper="He et al. 2016, CVPR", norm="batch", stem_stride=True)


class PadShortcut(nn.Module):
    """Option A shortcut: keep every `stride`-th pixel and append zero channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x):
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


class ResNet(nn.Module):
    def __init__(self, block, depths, channels, *, pad_shortcut=False, num_classes, width, norm, dropout,
                 stem_stride=1):
        super().__init__()
        channels, layer = [scaled(c, width) for c in channels], norm_layer(norm)
        cin = channels[0]
        layers = [conv_norm_relu(3, cin, stride=stem_stride, norm=norm)]
        for stage, (planes, depth) in enumerate(zip(channels, depths)):
            for i in range(depth):
                stride, cout = (2 if stage > 0 and i == 0 else 1), planes * block.expansion
                shortcut = None
                if stride != 1 or cin != cout:
                    shortcut = PadShortcut(stride, cout - cin) if pad_shortcut else nn.Sequential(
                        nn.Conv2d(cin, cout, 1, stride, bias=False), layer(cout)
                    )
                layers.append(block(cin, planes, stride, shortcut, norm_layer=layer))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = classifier(cin, num_classes, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


IMAGENET_STAGES = (64, 128, 256, 512)
CIFAR_STAGES = (16, 32, 64)


def cifar_resnet(depth: int, **kw) -> ResNet:
    """The paper's 6n+2-layer CIFAR ResNet."""
    return ResNet(BasicBlock, [(depth - 2) // 6] * 3, CIFAR_STAGES, pad_shortcut=True, **kw)


@register
def resnet18(**kw):
    return ResNet(BasicBlock, [2, 2, 2, 2], IMAGENET_STAGES, **kw)


@register
def resnet34(**kw):
    return ResNet(BasicBlock, [3, 4, 6, 3], IMAGENET_STAGES, **kw)


@register
def resnet50(**kw):
    return ResNet(Bottleneck, [3, 4, 6, 3], IMAGENET_STAGES, **kw)


@register
def resnet20(**kw):
    return cifar_resnet(20, **kw)


@register
def resnet32(**kw):
    return cifar_resnet(32, **kw)


@register
def resnet44(**kw):
    return cifar_resnet(44, **kw)


@register
def resnet56(**kw):
    return cifar_resnet(56, **kw)


@register
def resnet110(**kw):
    return cifar_resnet(110, **kw)
