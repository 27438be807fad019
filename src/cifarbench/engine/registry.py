"""Name lookup shared by the engine's registries (augmentations, optimizers, schedules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from cifarbench.errors import ConfigError

V = TypeVar("V")


def check_name(registry: Mapping[str, object], name: str, kind: str, error: type[Exception] = ValueError) -> str:
    """`name` if it is registered, else `error` naming the valid ones (ValueError inside pydantic validators)."""
    if name not in registry:
        raise error(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    return name


def lookup(registry: Mapping[str, V], name: str, kind: str) -> V:
    """The registered value, or a ConfigError listing the valid names."""
    check_name(registry, name, kind, error=ConfigError)
    return registry[name]
