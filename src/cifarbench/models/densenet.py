"""DenseNet: Huang, Liu, van der Maaten & Weinberger, "Densely connected convolutional networks", CVPR 2017.

Adapted to 32x32: the 7x7/2 conv and 3x3/2 max pool of the ImageNet stem become one 3x3 conv to
2 x growth channels with no pooling (the paper's own CIFAR stem), so only the transitions' 2x2 average
pools shrink the image. All variants are DenseNet-BC: bottleneck layers BN-ReLU-1x1 conv (4 x growth) -
BN-ReLU-3x3 conv (growth), transitions halving the channels.
- densenet121: the ImageNet block sizes 6-12-24-16, growth 32 (as in kuangliu/pytorch-cifar), 6.96M parameters.
- densenet_bc100: the paper's CIFAR model, depth 100 (3 blocks of 16 layers), growth 12, 0.77M parameters.
`width` scales the growth rate, hence every layer. torchvision's dense blocks hard-wire BatchNorm2d, so
the blocks are written here to honour the `norm` switch; `pooling` swaps the
transitions' average pools for max pools or stride-2 convs. `stem_stride=2` makes the stem conv
stride 2 (every block on a quarter of the pixels, 4x fewer FLOPs), for CPU presets.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarbench.models.layers import classifier, downsample, norm_layer, scaled
from cifarbench.models.registry import register_model

register = register_model(family="densenet", paper="Huang et al. 2017, CVPR", norm="batch", stem_stride=True,
                          pooling="avg")
BOTTLENECK = 4  # 1x1 conv outputs BOTTLENECK x growth channels (the paper's DenseNet-B)
COMPRESSION = 0.5  # transitions keep this fraction of channels (the paper's DenseNet-C)


def norm_relu_conv(cin: int, cout: int, kernel_size: int, norm: str) -> nn.Sequential:
    """Pre-activation conv: norm -> ReLU -> conv ('same' padding; a bias only without a norm)."""
    conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=norm == "none")
    return nn.Sequential(norm_layer(norm)(cin), nn.ReLU(inplace=True), conv)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, norm: str):
        super().__init__()
        mid = BOTTLENECK * growth
        self.body = nn.Sequential(norm_relu_conv(cin, mid, 1, norm), norm_relu_conv(mid, growth, 3, norm))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet(nn.Module):
    def __init__(self, blocks: list[int], growth: int, *, num_classes, width, norm, pooling, dropout,
                 stem_stride=1):
        super().__init__()
        growth = scaled(growth, width)
        cin = 2 * growth
        layers = [nn.Conv2d(3, cin, 3, stride=stem_stride, padding=1, bias=False)]  # stride 2: CPU presets
        for i, depth in enumerate(blocks):
            for _ in range(depth):
                layers.append(DenseLayer(cin, growth, norm))
                cin += growth
            if i < len(blocks) - 1:  # transition
                cout = int(cin * COMPRESSION)
                layers += [norm_relu_conv(cin, cout, 1, norm), downsample(pooling, cout, 2, 2, norm=norm)]
                cin = cout
        layers += [norm_layer(norm)(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = classifier(cin, num_classes, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


@register
def densenet121(**kw):
    return DenseNet([6, 12, 24, 16], 32, **kw)


@register
def densenet_bc100(**kw):
    return DenseNet([16, 16, 16], 12, **kw)  # depth 100 = 3 x 16 x 2 convs + stem + 2 transitions + classifier
