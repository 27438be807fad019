"""Optimizers and learning-rate schedules by name.

Weight decay is L2 through the optimizer's own `weight_decay`: *coupled* (wd * w added to the gradient,
so Adam rescales it) for sgd, momentum and adam; *decoupled* (w -= lr * wd * w, AdamW) for adamw. It
reaches only the `decay` parameter group: with `exclude_norm_and_bias_from_decay` (the default) biases
and normalization-layer weights get none (see `regularize.param_groups`).

A schedule is a multiplier of each group's base lr, evaluated before every optimizer step from the step
count, times a linear warmup. Only `plateau` has state of its own (it watches the validation loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cifarbench.engine.config import OptimizerConfig, ScheduleConfig

ParamGroups = list[dict]

OPTIMIZERS: dict[str, Callable[[ParamGroups, OptimizerConfig], torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr),
    "momentum": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas),
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas),
}


class Schedule:
    """lr multiplier at optimizer step `step` (0-based) of `total` steps, `per_epoch` steps an epoch."""

    def __init__(self, cfg: ScheduleConfig, total: int, per_epoch: int):
        self.cfg, self.total, self.per_epoch = cfg, total, per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * per_epoch)

    def factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warm * self.shape(step)

    def shape(self, step: int) -> float:
        return 1.0

    def end_epoch(self, val_loss: float) -> None:
        """Called after each epoch's validation; only `plateau` reacts."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Step(Schedule):
    def shape(self, step: int) -> float:
        return self.cfg.gamma ** math.floor(step / self.per_epoch / self.cfg.step_size)


class MultiStep(Schedule):
    def shape(self, step: int) -> float:
        passed = sum(step >= round(m * self.total) for m in self.cfg.milestones)
        return self.cfg.gamma**passed


class Cosine(Schedule):
    """Half a cosine from 1 to 0 over the run after warmup."""

    def shape(self, step: int) -> float:
        t = max(0, step - self.warmup_steps) / max(1, self.total - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * t))


class OneCycle(Schedule):
    """Linear up from 0 to 1 at `peak_fraction` of the run, then linear down to 0 (airbench's triangle)."""

    def shape(self, step: int) -> float:
        t = (step + 1) / self.total
        p = self.cfg.peak_fraction
        return t / p if t < p else max(0.0, (1 - t) / (1 - p))


class Plateau(Schedule):
    """ReduceLROnPlateau on the validation loss, same rule as torch's (mode min, relative threshold
    1e-4, no cooldown): after more than `plateau_patience` epochs without improvement, lr *= factor."""

    threshold = 1e-4

    def __init__(self, cfg: ScheduleConfig, total: int, per_epoch: int):
        super().__init__(cfg, total, per_epoch)
        self.scale, self.best, self.bad_epochs = 1.0, math.inf, 0

    def shape(self, step: int) -> float:
        return self.scale

    def end_epoch(self, val_loss: float) -> None:
        if val_loss < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.plateau_patience:
            self.scale *= self.cfg.plateau_factor
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]


SCHEDULES: dict[str, type[Schedule]] = {
    "none": Schedule,
    "step": Step,
    "multistep": MultiStep,
    "cosine": Cosine,
    "onecycle": OneCycle,
    "plateau": Plateau,
}


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to its `base_lr` * factor; returns the first group's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]
