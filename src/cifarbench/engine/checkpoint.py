"""Checkpoints: one file per run, rewritten atomically after every epoch, readable with weights_only=True.

The file holds everything that makes a resumed run continue bit for bit on the CPU: model, optimizer,
schedule and early-stopping state, the generators' states, the global RNG (dropout draws from it), the
step count and the history, and the fast paths (autocast, channels_last) the run trains with, which its
resume keeps. It also holds the config and seed, and refuses to resume a different run.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch

from cifarbench.errors import CifarbenchError, ConfigError
from cifarbench.io import atomic_path

FORMAT = 1


def save_checkpoint(path: Path | str, state: dict) -> None:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, **state}, tmp)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        raise CifarbenchError(f"could not write the checkpoint {path.name} into {path.parent} ({exc}): is the disk "
                              "full? Free space there and run again; the run resumes from its last checkpoint") from exc


def load_checkpoint(path: Path | str, *, config: dict, seed: int) -> dict | None:
    """The saved state; None if the file is unreadable (truncated, corrupt): it is moved aside to
    `<name>.corrupt-<time>` with a warning naming it, and the run starts over. A ConfigError if it was
    written by another config, seed or format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (PermissionError, FileNotFoundError, MemoryError):
        raise  # the file may be fine: not ours to move
    except Exception as exc:  # truncated or corrupt: torch raises RuntimeError, OSError, EOFError, UnpicklingError...
        aside = Path(path).with_name(f"{Path(path).name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        warnings.warn(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]}); moved aside to {aside}, "
                      "the run starts over", stacklevel=2)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path}: checkpoint format {state.get('format') if isinstance(state, dict) else '?'} "
                          f"is not {FORMAT}; delete it to start over")
    if state["config"] != config or state["seed"] != seed:
        changed = sorted(k for k in config if state["config"].get(k) != config[k])
        what = f"train keys {', '.join(changed)}" if changed else f"seed {state['seed']} -> {seed}"
        raise ConfigError(f"{path} belongs to another run ({what} changed); delete it to start over")
    return state
