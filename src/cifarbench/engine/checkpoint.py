"""Checkpoints: one file per run, rewritten atomically after every epoch, readable with weights_only=True.

The file holds everything that makes a resumed run continue bit for bit on the CPU: model, optimizer,
schedule and early-stopping state, the generators' states, the global RNG (dropout draws from it), the
step count and the history. It also holds the config and seed, and refuses to resume a different run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cifarbench.errors import ConfigError
from cifarbench.io import atomic_path

FORMAT = 1


def save_checkpoint(path: Path | str, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path | str, *, config: dict, seed: int) -> dict:
    """The saved state; a ConfigError if it was written by another config, seed or format."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ConfigError(f"{path}: checkpoint format {state.get('format')} is not {FORMAT}; delete it to start over")
    if state["config"] != config or state["seed"] != seed:
        changed = sorted(k for k in config if state["config"].get(k) != config[k])
        what = f"train keys {', '.join(changed)}" if changed else f"seed {state['seed']} -> {seed}"
        raise ConfigError(f"{path} belongs to another run ({what} changed); delete it to start over")
    return state
