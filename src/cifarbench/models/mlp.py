"""A multilayer perceptron baseline (Rumelhart, Hinton & Williams, "Learning representations by
back-propagating errors", Nature 1986): the 3x32x32 image flattened to 3,072 inputs -> 512 -> 256 ->
classes with ReLU. There is no spatial structure to adapt; `width` scales the hidden layers.
`dropout` acts before the output layer, as in every other family, so ablations compare like with like.
"""

from __future__ import annotations

import torch.nn as nn

from cifarbench.models.layers import classifier, scaled
from cifarbench.models.registry import register_model


class MLP(nn.Module):
    def __init__(self, hidden: tuple[int, ...], *, num_classes: int, width: float, dropout: float):
        super().__init__()
        layers, cin = [nn.Flatten()], 3 * 32 * 32
        for h in (scaled(h, width) for h in hidden):
            layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
            cin = h
        self.features = nn.Sequential(*layers)
        self.classifier = classifier(cin, num_classes, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(family="mlp", paper="Rumelhart et al. 1986, Nature", norm=None)
def mlp(**kw):
    return MLP((512, 256), **kw)
