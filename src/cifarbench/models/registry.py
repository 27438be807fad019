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


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    paper: str  # short citation of the architecture's paper
    has_batch_norm_switch: bool  # False where BN makes no sense (recurrent, MLP)
    default_batch_norm: bool  # the family's usual choice, used when build_model(batch_norm=None)
    default_dropout: float  # p = probability of dropping, used when build_model(dropout=None)
    has_stem_stride: bool  # the first conv can take stride 2 (a 4x cheaper model for CPU presets)
    factory: Callable[..., nn.Module] = field(repr=False, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(*, family: str, paper: str, batch_norm: bool | None, dropout: float = 0.0,
                   stem_stride: bool = False):
    """Decorator registering a factory under its function name. batch_norm=None: the family has no BN switch
    and its factory takes no `batch_norm` argument; stem_stride=True: its factory takes `stem_stride`."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(
            name, family, paper, batch_norm is not None, bool(batch_norm), dropout, stem_stride, factory
        )
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
    batch_norm: bool | None = None,
    dropout: float | None = None,
    stem_stride: int = 1,
) -> nn.Module:
    """The model `name` for (N, 3, 32, 32) normalized images -> (N, num_classes) logits.

    width: channel/hidden-unit multiplier (1 = the paper's model). batch_norm / dropout: None = the
    family's default (`model_info(name)`); dropout p is the probability of dropping. stem_stride=2 makes
    the first conv stride 2, so every later layer works on a quarter of the pixels (GoogLeNet, DenseNet and
    ResNet, whose CIFAR versions keep 32x32 maps for their first blocks and are far too slow for a CPU otherwise).
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
    if info.has_batch_norm_switch:
        kwargs["batch_norm"] = info.default_batch_norm if batch_norm is None else bool(batch_norm)
    elif batch_norm is not None:
        raise ConfigError(f"batch_norm does not apply to {name} ({info.family}); leave it unset")
    if info.has_stem_stride:
        kwargs["stem_stride"] = _check_stem_stride(stem_stride)
    elif stem_stride != 1:
        with_stem = ", ".join(n for n, i in _REGISTRY.items() if i.has_stem_stride)
        raise ConfigError(f"stem_stride applies only to {with_stem}; leave it at 1 for {name}")
    return info.factory(**kwargs)


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
    batch_norm: bool | None = Field(None, description="null = the family's default")
    dropout: float | None = Field(None, ge=0, lt=1, description="probability of dropping; null = family default")
    stem_stride: Literal[1, 2] = Field(1, description="2 = stride-2 first conv (googlenet, densenet): 4x fewer FLOPs")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in _REGISTRY:
            raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
        return name

    @model_validator(mode="after")
    def _switch_applies(self) -> "ModelConfig":
        if self.batch_norm is not None and not _REGISTRY[self.name].has_batch_norm_switch:
            raise ValueError(f"batch_norm does not apply to {self.name}; leave it unset (null)")
        if self.stem_stride != 1 and not _REGISTRY[self.name].has_stem_stride:
            raise ValueError(f"stem_stride does not apply to {self.name}; leave it at 1")
        return self


def build_model_from(cfg: ModelConfig, num_classes: int = 10) -> nn.Module:
    return build_model(
        cfg.name, num_classes=num_classes, width=cfg.width, batch_norm=cfg.batch_norm, dropout=cfg.dropout,
        stem_stride=cfg.stem_stride,
    )
