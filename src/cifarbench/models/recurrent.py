"""Recurrent classifiers that read an image as a sequence of its 32 rows, top to bottom.

LSTM: Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 1997.
GRU: Cho et al., "Learning phrase representations using RNN encoder-decoder ...", EMNLP 2014.

Adapted for 32x32 RGB inputs as in the seed course: (N, 3, 32, 32) becomes (N, 32 rows, 96 features)
in PyTorch's batch-first [batch, seq, feature] layout, each row's features being its 32 red, then 32
green, then 32 blue values. One layer of 128 hidden units (`width` scales it); the last hidden state
feeds the linear classifier. There is no norm or pooling switch; the recurrence always runs in fp32.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarbench.models.layers import classifier, scaled
from cifarbench.models.registry import register_model

ROWS, ROW_FEATURES = 32, 3 * 32


class RowRNN(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], hidden: int = 128, *, num_classes: int, width: float, dropout: float):
        super().__init__()
        self.rnn = cell(ROW_FEATURES, scaled(hidden, width), batch_first=True)
        self.classifier = classifier(self.rnn.hidden_size, num_classes, dropout)

    def forward(self, x):
        rows = x.permute(0, 2, 1, 3).reshape(x.shape[0], ROWS, ROW_FEATURES)  # (N, C, H, W) -> (N, H, C*W)
        # The recurrence stays fp32 under autocast: oneDNN has no bf16 LSTM/GRU without hardware bf16
        # (it raises "could not create a primitive descriptor" on AVX2 CPUs), and 32 steps of bf16 state drift.
        with torch.autocast(rows.device.type, enabled=False):
            out, _ = self.rnn(rows.float())
        return self.classifier(out[:, -1])


@register_model(family="recurrent", paper="Hochreiter & Schmidhuber 1997, Neural Computation", norm=None)
def lstm(**kw):
    return RowRNN(nn.LSTM, **kw)


@register_model(family="recurrent", paper="Cho et al. 2014, EMNLP", norm=None)
def gru(**kw):
    return RowRNN(nn.GRU, **kw)
