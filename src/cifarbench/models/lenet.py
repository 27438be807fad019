"""LeNet-5: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 1998.

The paper's network already takes 32x32 inputs, so the layout is unchanged: conv5 (6) -> pool ->
conv5 (16) -> pool -> FC 120 -> FC 84 -> FC classes (~62k parameters). Adapted as in most modern
re-implementations: 3 input channels, ReLU instead of scaled tanh, max instead of trainable average
pooling, a full C3 connection table and a linear output instead of RBF units. `width` scales the convs
and the hidden FC layers; `norm` adds a normalization after each conv (not in the paper; none by default);
`pooling` swaps the two max pools for average pools or stride-2 convs.
"""

from __future__ import annotations

import torch.nn as nn

from cifarbench.models.layers import classifier, downsample, norm_layer, scaled
from cifarbench.models.registry import register_model


class LeNet(nn.Module):
    def __init__(self, *, num_classes: int, width: float, norm: str, pooling: str, dropout: float):
        super().__init__()
        c1, c2, f1, f2 = (scaled(c, width) for c in (6, 16, 120, 84))
        layer = norm_layer(norm)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 5), layer(c1), nn.ReLU(inplace=True), downsample(pooling, c1, 2, 2, norm=norm),  # 32->28->14
            nn.Conv2d(c1, c2, 5), layer(c2), nn.ReLU(inplace=True), downsample(pooling, c2, 2, 2, norm=norm),  # 14->10->5
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, f1), nn.ReLU(inplace=True),
            nn.Linear(f1, f2), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.classifier = classifier(f2, num_classes, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(family="lenet", paper="LeCun et al. 1998, Proc. IEEE", norm="none", pooling="max")
def lenet5(**kw):
    return LeNet(**kw)
