"""Regularization the engine owns: which parameters are decayed, the L1 penalty, and early stopping.

(Dropout and normalization belong to the model zoo: `build_model(..., dropout=p, norm="batch" | ... | "none")`.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# Normalization layers whose affine weights should not be pulled towards 0 (that fights the scale
# they are there to learn; cf. Goyal et al. 2017, "no bias decay").
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def split_decay(model: nn.Module, exclude_norm_and_bias: bool = True) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay) trainable parameters. Excluded: every parameter of a normalization layer and every
    parameter whose name starts with `bias` (so LSTM `bias_ih_l0` too)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            excluded = isinstance(module, NORM_LAYERS) or name.startswith("bias")
            (no_decay if exclude_norm_and_bias and excluded else decay).append(p)
    return decay, no_decay


def param_groups(model: nn.Module, lr: float, weight_decay: float, exclude_norm_and_bias: bool = True) -> list[dict]:
    """Optimizer groups: weight decay on `decay`, none on `no_decay`. `base_lr` is what schedules scale."""
    decay, no_decay = split_decay(model, exclude_norm_and_bias)
    groups = [{"params": decay, "weight_decay": weight_decay, "base_lr": lr}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "base_lr": lr})
    return groups


def l1_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """Σ|w| over `params` (a scalar tensor that autograd differentiates to sign(w))."""
    return torch.stack([p.abs().sum() for p in params]).sum()


class EarlyStopping:
    """Watches validation accuracy: `update` returns True once `patience` epochs in a row failed to beat
    the best by more than `min_delta`, and not before epoch `start_epoch` is over. Keeps a CPU copy of the
    best weights for `restore` (from the first epoch on)."""

    def __init__(self, patience: int, min_delta: float, start_epoch: int = 0):
        self.patience, self.min_delta, self.start_epoch = patience, min_delta, start_epoch
        self.best, self.best_epoch, self.bad_epochs = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_acc: float, model: nn.Module) -> bool:
        if val_acc > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = val_acc, epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience and epoch > self.start_epoch

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return copy.copy(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)
