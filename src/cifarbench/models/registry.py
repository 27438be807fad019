"""Models chosen by name. Each family module registers its variants with `@register_model(...)`;
`build_model(name, ...)` checks the arguments and calls the variant's factory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch.nn as nn
from pydantic import Field, field_validator, model_validator

from cifarbench.config import Section
from cifarbench.errors import ConfigError
from cifarbench.models.layers import NORMS, POOLINGS


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    paper: str  # short citation of the architecture's paper
    default_norm: str | None  # the family's normalization (layers.NORMS); None: no norm switch (recurrent, MLP)
    default_dropout: float  # p = probability of dropping, used when build_model(dropout=None)
    has_stem_stride: bool  # the first conv can take stride 2 (a 4x cheaper model for CPU presets)
    default_pooling: str | None = None  # its down-sampling pools (layers.POOLINGS); None: it has none to switch
    factory: Callable[..., nn.Module] = field(default=None, repr=False, compare=False)

    @property
    def has_norm_switch(self) -> bool:
        return self.default_norm is not None

    @property
    def has_pooling_switch(self) -> bool:
        return self.default_pooling is not None


# How conv weights start. he: normal with variance 2 / fan_in (He et al. 2015, "Delving deep into
# rectifiers", derived for ReLU nets without normalization; torchvision's VGG, ResNet and DenseNet use its
# fan_out form, which blows up behind the narrow 1x1 convs of these CPU widths), biases 0.
# torch: PyTorch's layer default (uniform, variance 1 / (3 fan_in)): each ReLU conv then shrinks the signal's
# variance ~6x, so a deep net without batch norm starts with nothing left to learn from (no_bn measured
# that, not batch norm). With batch norm after a conv the conv's scale does not change the function, but it
# does change the effective step (lr / |w|^2): He's larger start is a smaller step there (docs/presets.md).
INITS = ("he", "torch")

_REGISTRY: dict[str, ModelInfo] = {}


def register_model(*, family: str, paper: str, norm: str | None, dropout: float = 0.0, stem_stride: bool = False,
                   pooling: str | None = None):
    """Decorator registering a factory under its function name. norm=None: the family has no norm switch and
    its factory takes no `norm` argument; pooling=None: it has no down-sampling pools and its factory takes no
    `pooling`; stem_stride=True: its factory takes `stem_stride`."""
    if norm is not None and norm not in NORMS or pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"register_model: norm {norm!r} not in {NORMS} or pooling {pooling!r} not in {POOLINGS}")

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name, family, paper, norm, dropout, stem_stride, pooling, factory)
        return factory

    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    width: float = 1.0,
    norm: str | None = None,
    pooling: str | None = None,
    dropout: float | None = None,
    stem_stride: int = 1,
    init: str = "he",
) -> nn.Module:
    """The model `name` for (N, 3, 32, 32) normalized images -> (N, num_classes) logits.

    width: channel/hidden-unit multiplier (1 = the paper's model). norm (batch | group | layer | instance |
    none), pooling (max | avg | conv) and dropout: None = the family's default (`model_info(name)`); dropout p
    is the probability of dropping. stem_stride=2 makes the first conv stride 2, so every later layer works
    on a quarter of the pixels (GoogLeNet, DenseNet and ResNet, whose CIFAR versions keep 32x32 maps for
    their first blocks and are far too slow for a CPU otherwise). init: how conv weights start (INITS).
    """
    info = model_info(name)
    if not (_is_number(num_classes) and isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (_is_number(width) and math.isfinite(width) and width > 0):
        raise ConfigError(f"width must be a number > 0, got {width!r}")
    if dropout is not None and not (_is_number(dropout) and 0 <= dropout < 1):
        raise ConfigError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    kwargs = dict(num_classes=num_classes, width=float(width))
    kwargs["dropout"] = info.default_dropout if dropout is None else float(dropout)
    for key, value, default, valid in (("norm", norm, info.default_norm, NORMS),
                                       ("pooling", pooling, info.default_pooling, POOLINGS)):
        if default is None and value is not None:
            raise ConfigError(f"{key} does not apply to {name} ({info.family}); leave it unset")
        if value is not None and value not in valid:
            raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {value!r}")
        if default is not None:
            kwargs[key] = default if value is None else value
    if info.has_stem_stride:
        kwargs["stem_stride"] = _check_stem_stride(stem_stride)
    elif stem_stride != 1:
        with_stem = ", ".join(n for n, i in _REGISTRY.items() if i.has_stem_stride)
        raise ConfigError(f"stem_stride applies only to {with_stem}; leave it at 1 for {name}")
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    model = info.factory(**kwargs)
    if init == "he":
        he_init(model)
    return model


def he_init(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _check_stem_stride(stem_stride) -> int:
    if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
        raise ConfigError(f"stem_stride must be 1 (the CIFAR stem) or 2 (a stride-2 first conv), got {stem_stride!r}")
    return int(stem_stride)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ModelConfig(Section):
    """The `model` part of a params.yaml section."""

    name: str = Field(description="a registered architecture, see `cifarbench models`")
    # At most 64: wider than 64x the paper's model is a typo, not a benchmark (billions of parameters).
    width: float = Field(1.0, gt=0, le=64, description="channel multiplier; 1 = the paper's model")
    norm: Literal[NORMS] | None = Field(None, description="batch | group | layer | instance | none; null = family's")
    pooling: Literal[POOLINGS] | None = Field(None, description="down-sampling: max | avg | conv; null = family's")
    dropout: float | None = Field(None, ge=0, lt=1, description="probability of dropping; null = family default")
    stem_stride: Literal[1, 2] = Field(1, description="2 = stride-2 first conv (googlenet, densenet): 4x fewer FLOPs")
    init: Literal[INITS] = Field("he", description="conv weights: he (He et al. 2015) | torch (PyTorch's "
                                         "default, which starves a deep net without batch norm)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "batch_norm" in data:
            raise ValueError("batch_norm was renamed to norm (batch | group | layer | instance | none): "
                             "batch_norm: true is norm: batch, batch_norm: false is norm: none")
        return data

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in _REGISTRY:
            raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
        return name

    @model_validator(mode="after")
    def _switch_applies(self) -> "ModelConfig":
        info = _REGISTRY[self.name]
        if self.norm is not None and not info.has_norm_switch:
            raise ValueError(f"norm does not apply to {self.name} (no normalization layers); leave it unset (null)")
        if self.pooling is not None and not info.has_pooling_switch:
            raise ValueError(f"pooling does not apply to {self.name} (no down-sampling pools); leave it unset (null)")
        if self.stem_stride != 1 and not info.has_stem_stride:
            raise ValueError(f"stem_stride does not apply to {self.name}; leave it at 1")
        return self

    def effective(self) -> tuple:
        """The switches with the family defaults filled in, so `norm: null` equals the family's own norm."""
        info = _REGISTRY[self.name]
        norm = info.default_norm if self.norm is None else self.norm
        pooling = info.default_pooling if self.pooling is None else self.pooling
        dropout = info.default_dropout if self.dropout is None else self.dropout
        return self.name, self.width, norm, pooling, dropout, self.stem_stride, self.init


def build_model_from(cfg: ModelConfig, num_classes: int = 10) -> nn.Module:
    return build_model(
        cfg.name, num_classes=num_classes, width=cfg.width, norm=cfg.norm, pooling=cfg.pooling,
        dropout=cfg.dropout, stem_stride=cfg.stem_stride, init=cfg.init,
    )
