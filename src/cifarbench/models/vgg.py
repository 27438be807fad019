"""VGG: Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition",
ICLR 2015; with batch norm after every conv (Ioffe & Szegedy 2015) as in torchvision's vgg*_bn (`norm`
switches it) and `pooling` to swap the five max pools for average pools or stride-2 convs.

Adapted to 32x32 as in kuangliu/pytorch-cifar: the paper's conv stacks (configurations A, B, D, E) and
five 2x2 max pools are kept, which leave 512 x 1 x 1; the three 4096-unit FC layers (sized for 7x7x512)
become one linear layer, preceded by the paper's dropout 0.5. VGG16-BN has 14.73M parameters.
"""

from __future__ import annotations

import torch.nn as nn

from cifarbench.errors import ConfigError
from cifarbench.models.layers import classifier, conv_norm_relu, downsample, scaled
from cifarbench.models.registry import register_model

register = register_model(family="vgg", paper="Simonyan & Zisserman 2015, ICLR", norm="batch", dropout=0.5,
                          pooling="max")

# Table 1 of the paper: output channels of each 3x3 conv, "M" = 2x2 max pool.
CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, depth: int, *, num_classes: int, width: float, norm: str, pooling: str,
                 dropout: float):
        super().__init__()
        if norm == "instance" and pooling == "conv":
            raise ConfigError("vgg: norm=instance with pooling=conv: the last stride-2 conv makes 1x1 maps, whose "
                              "instance norm is a constant; choose another norm or pooling")
        layers, cin = [], 3
        for item in CONFIGS[depth]:
            if item == "M":
                layers.append(downsample(pooling, cin, 2, 2, norm=norm))
            else:
                layers.append(conv_norm_relu(cin, scaled(item, width), norm=norm))
                cin = scaled(item, width)
        self.features = nn.Sequential(*layers)  # 32 px -> 1 px after five pools
        self.classifier = classifier(cin, num_classes, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


@register
def vgg11(**kw):
    return VGG(11, **kw)


@register
def vgg13(**kw):
    return VGG(13, **kw)


@register
def vgg16(**kw):
    return VGG(16, **kw)


@register
def vgg19(**kw):
    return VGG(19, **kw)
