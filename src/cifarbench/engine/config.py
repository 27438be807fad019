"""Config sections of the training engine: what `params.yaml`'s `train:` section may say.

Every section is a frozen `Section` (unknown keys rejected). Names (optimizer, schedule, augmentation
policy) are checked against the registries that implement them, so the error lists the valid names and a
name added to a registry is accepted here with no other change.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, field_validator, model_validator

from cifarbench.config import ListAsTuple, Section
from cifarbench.engine.augment import parse_policy
from cifarbench.engine.optim import OPTIMIZERS, SCHEDULES
from cifarbench.engine.registry import check_name

Fraction = Annotated[float, Field(gt=0, lt=1)]

# Upper bounds that catch typos (`epochs: 1e12`, `lr: 1e3`) before they reach training; no recipe comes near.
MAX_EPOCHS = 10_000  # the literature recipe trains 200
MAX_BATCH = 65_536  # images per batch; more than the 50,000 training images gains nothing
MAX_LR = 10.0  # peak learning rate; recipes use 1e-4 to 0.5


def _registered(registry: dict, kind: str):
    """A validator of `name` against `registry` (pydantic turns its ValueError into a ConfigError that names
    the key, via `parse_section`)."""
    return field_validator("name")(classmethod(lambda cls, v: check_name(registry, v, kind)))


class OptimizerConfig(Section):
    """Optimizer by name. Weight decay is L2: coupled (added to the gradient) for sgd/momentum/adam,
    decoupled (shrinks the weights directly, Loshchilov & Hutter 2019) for adamw."""

    name: str = "momentum"
    lr: float = Field(gt=0, le=MAX_LR, description="peak learning rate, per batch of `batch_size` (no scaling)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd momentum; used by `momentum` only")
    nesterov: bool = Field(True, description="Nesterov momentum; used by `momentum` only")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 coefficient (coupled), or decoupled for adamw")
    betas: Annotated[tuple[float, float], ListAsTuple] = Field((0.9, 0.999), description="Adam's (beta1, beta2); adam and adamw only")
    exclude_norm_and_bias_from_decay: bool = Field(
        True, description="no weight decay (and no L1) on biases and normalization-layer parameters"
    )

    name_is_registered = _registered(OPTIMIZERS, "optimizer")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"both betas must be in [0, 1), got {v}")
        return v


class ScheduleConfig(Section):
    """Learning-rate schedule by name; the lr is set before every optimizer step (not once per epoch).

    Units: `warmup_epochs` and `step_size` are in epochs (fractions allowed); `milestones` and
    `peak_fraction` are fractions of the whole run, so a preset that changes `epochs` keeps its shape.
    Warmup (linear from ~0 to 1) multiplies whichever schedule is chosen.
    """

    name: str = "none"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warmup length in epochs")
    step_size: float = Field(10.0, gt=0, le=MAX_EPOCHS, description="`step`: multiply lr by gamma every step_size epochs")
    milestones: Annotated[tuple[Fraction, ...], ListAsTuple] = Field((0.5, 0.75), description="`multistep`: fractions of the run")
    gamma: float = Field(0.1, gt=0, le=1, description="`step`/`multistep` decay factor")
    plateau_patience: int = Field(2, ge=0, le=MAX_EPOCHS, description="`plateau`: epochs without val-loss improvement")
    plateau_factor: float = Field(0.2, gt=0, lt=1, description="`plateau`: lr multiplier on a plateau")
    peak_fraction: Fraction = Field(0.25, description="`onecycle`: where the linear ramp up peaks")

    name_is_registered = _registered(SCHEDULES, "schedule")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if list(v) != sorted(set(v)):
            raise ValueError(f"milestones must be strictly increasing, got {v}")
        return v


class AugmentConfig(Section):
    """Augmentation policy: a registered name (`standard`, `all`, ...) or names joined by `+`."""

    policy: str = "none"
    crop_padding: int = Field(4, ge=0, le=16, description="`crop`: zero padding in pixels on each side")
    rotate_degrees: float = Field(15.0, ge=0, le=180, description="`rotate`: angle uniform in ±degrees")
    scale_range: Annotated[tuple[float, float], ListAsTuple] = Field((0.8, 1.2), description="`scale`: zoom uniform in [lo, hi]")
    noise_std: float = Field(
        0.05, ge=0, le=1, description="`noise`: Gaussian std in units of the [0, 1] pixel range (0.05 = 12.75/255)"
    )
    vflip: bool = Field(False, description="`flip`: also flip vertically (independently, p=0.5)")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        parse_policy(v, error=ValueError)
        return v

    @field_validator("scale_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {v}")
        return v


class EarlyStopConfig(Section):
    """Stop when validation accuracy has not improved by `min_delta` for `patience` epochs, but never in
    the first `start_fraction` of the run: under a warmup or one-cycle schedule the early epochs run at a
    learning rate still rising to its peak (one-cycle: the first quarter), where a plateau says nothing
    about the end of training (on the default preset a VGG seed stopped there 29 points below its twin).
    The model then holds the best-validation weights (restored whenever early stopping is enabled)."""

    enabled: bool = False
    patience: int = Field(5, ge=1, le=MAX_EPOCHS, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, le=1, description="smallest val-accuracy gain (0-1 scale) that counts")
    start_fraction: float = Field(0.5, ge=0, lt=1, description="no stop before this fraction of the epochs has run")


class TrainConfig(Section):
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="training batch; the last partial batch of an epoch is dropped")
    eval_batch_size: int = Field(512, ge=1, le=MAX_BATCH)
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = ScheduleConfig()
    augment: AugmentConfig = AugmentConfig()
    l1: float = Field(0.0, ge=0, le=1, description="λ of λ·Σ|w| added to the loss, over the weight-decayed params")
    early_stop: EarlyStopConfig = EarlyStopConfig()
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    fast: bool = Field(True, description="autocast (bf16/fp16) and channels_last where they help; off = exact fp32")
    compile: bool = Field(False, description="torch.compile the model (needs a C++ compiler; slow first epoch)")
    device: str = Field("auto", description="auto (cuda if present, else cpu), cpu, cuda, cuda:N, mps")

    @field_validator("device")
    @classmethod
    def _valid_device(cls, v: str) -> str:
        if v != "auto":
            try:
                torch.device(v)
            except RuntimeError:
                raise ValueError(f"unknown device {v!r}; use auto, cpu, cuda, cuda:N or mps") from None
        return v

    @model_validator(mode="after")
    def _warmup_within_run(self) -> TrainConfig:
        if self.schedule.warmup_epochs > self.epochs:
            raise ValueError(f"schedule.warmup_epochs={self.schedule.warmup_epochs} exceeds epochs={self.epochs}")
        return self
