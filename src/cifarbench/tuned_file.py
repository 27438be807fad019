"""A tuned file (`runs/<preset>/tuned/<arch>.json`, written by the tune stage) read back checked: train and
report stop on a damaged one with its name and the fix, never a JSONDecodeError or a KeyError.

Its content: {"tuned": bool, "optimizer": {"lr": float, "weight_decay": float}, ...} (tuning.study.summarize).
"""

from __future__ import annotations

from pathlib import Path

from cifarbench.errors import CifarbenchError
from cifarbench.io import DamagedFile, read_checked_json


def read_tuned_file(path: Path | str) -> dict:
    """The tuned file's content; CifarbenchError naming it and the fix if it is damaged."""
    try:
        return read_checked_json(path, _why_bad)
    except DamagedFile as exc:
        raise CifarbenchError(f"{exc}: delete it and run `dvc repro` (the tune stage writes it again)") from None


def _why_bad(values: dict) -> str | None:
    if not isinstance(values.get("tuned"), bool):
        return 'has no "tuned": true or false'
    optimizer = values.get("optimizer")
    numbers = isinstance(optimizer, dict) and all(
        isinstance(optimizer.get(k), (int, float)) and not isinstance(optimizer.get(k), bool) for k in ("lr", "weight_decay"))
    return None if numbers or not values["tuned"] else 'says "tuned" but has no numbers for optimizer lr and weight_decay'
