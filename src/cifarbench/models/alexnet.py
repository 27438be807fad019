"""AlexNet: Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional neural
networks", NeurIPS 2012.

Adapted to 32x32: the 11x11/4 and 5x5 first convs become 3x3 (the first with stride 2) and the three
3x3/2 max pools become 2x2, so the five conv layers (64-192-384-256-256 channels, torchvision's
single-GPU layout) end at 256 x 2 x 2 instead of 256 x 6 x 6. The classifier keeps the paper's
dropout -> 4096 -> dropout -> 4096 -> classes (23M parameters, most of them in the FC layers). Local
response normalization is left out, as in torchvision; `norm` adds one after each conv instead (none by
default). `pooling` swaps the max pools for average pools or stride-2 convs.
`width` scales the convs and the FC layers.
"""

from __future__ import annotations

from functools import partial

import torch.nn as nn

from cifarbench.models.layers import conv_norm_relu, downsample, dropout_layers, scaled
from cifarbench.models.registry import register_model


class AlexNet(nn.Module):
    def __init__(self, *, num_classes: int, width: float, norm: str, pooling: str, dropout: float):
        super().__init__()
        c1, c2, c3, c4, c5, fc = (scaled(c, width) for c in (64, 192, 384, 256, 256, 4096))
        conv = partial(conv_norm_relu, kernel_size=3, norm=norm)

        def pool(channels):
            return downsample(pooling, channels, 2, 2, norm=norm)

        self.features = nn.Sequential(
            conv(3, c1, stride=2), pool(c1),  # 32 -> 16 -> 8
            conv(c1, c2), pool(c2),  # 8 -> 4
            conv(c2, c3), conv(c3, c4), conv(c4, c5), pool(c5),  # 4 -> 2
        )  # fmt: skip
        self.hidden = nn.Sequential(
            nn.Flatten(), *dropout_layers(dropout), nn.Linear(c5 * 2 * 2, fc), nn.ReLU(inplace=True),
            *dropout_layers(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.classifier = nn.Linear(fc, num_classes)

    def forward(self, x):
        return self.classifier(self.hidden(self.features(x)))


@register_model(family="alexnet", paper="Krizhevsky et al. 2012, NeurIPS", norm="none", dropout=0.5,
                pooling="max")
def alexnet(**kw):
    return AlexNet(**kw)
