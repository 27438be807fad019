"""The nightly files: a night's summary as JSON, the baseline (a promoted night) and the history.

    <baseline>                          {"preset", "commit", "date", "cells": [summary rows]}
    <history>/<YYYYMMDDTHHMMSSZ>-<commit>.json   the same, plus "verdicts" (counts and the failing cells)

Dates are UTC; file names sort in time order. Written atomically (cifarbench.io).
"""

from __future__ import annotations

import math
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from cifarbench.errors import CifarbenchError, ConfigError
from cifarbench.io import read_json, write_json_atomic
from cifarbench.nightly.compare import SUMMARY


def night(cells: pd.DataFrame, *, preset: str, commit: str, date: datetime) -> dict:
    """Tonight's summary: where it came from and one record per cell (NaN written as null)."""
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
               for row in cells.reindex(columns=SUMMARY).astype(object).to_dict("records")]
    return {"preset": preset, "commit": commit, "date": date.isoformat(timespec="seconds"), "cells": records}


def cells_of(summary: dict) -> pd.DataFrame:
    return pd.DataFrame(summary["cells"], columns=SUMMARY).fillna({"mean": math.nan, "images_per_s": math.nan})


def read_baseline(path: Path | str) -> dict | None:
    """The baseline's summary, or None before the first `--update-baseline`. A baseline that cannot be read
    is an error: it is what the night is gated on."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return _summary(path)
    except ValueError as exc:
        raise CifarbenchError(f"{path} is not a nightly baseline ({exc}): restore it from git "
                              f"(`git checkout -- {path}`) or promote a night with --update-baseline") from None


def write_baseline(path: Path | str, summary: dict) -> None:
    write_json_atomic(path, summary)


def append_history(folder: Path | str, summary: dict, verdicts: dict) -> Path:
    stamp = datetime.fromisoformat(summary["date"]).strftime("%Y%m%dT%H%M%SZ")
    path = Path(folder) / f"{stamp}-{summary['commit'][:10]}.json"
    write_json_atomic(path, {**summary, "verdicts": verdicts})
    return path


def read_history(folder: Path | str, preset: str) -> pd.DataFrame:
    """Every night of `preset`, one row per (night, cell): date, commit and the SUMMARY columns. A night that
    cannot be read (a truncated copy, a hand edit) is left out with a warning naming it: it only feeds the
    trend plot, and one bad file must not stop tonight's comparison."""
    frames = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            summary = _summary(path)
        except ValueError as exc:
            print(f"cifarbench nightly: warning: skipping {path}, not a nightly summary ({exc}); delete it or "
                  "restore it from where the history is kept", file=sys.stderr)
            continue
        if summary["preset"] == preset:
            cells = cells_of(summary)
            frames.append(cells.assign(date=pd.Timestamp(summary["date"]), commit=summary["commit"]))
    if not frames:
        return pd.DataFrame(columns=["date", "commit", *SUMMARY])
    return pd.concat(frames, ignore_index=True)


def _summary(path: Path) -> dict:
    """A night's summary from `path`; ValueError (saying what is wrong) unless it has every key and cell."""
    try:
        summary = read_json(path)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: a cut or garbled file
        raise ValueError(f"unreadable JSON: {exc}") from None
    missing = [k for k in ("preset", "commit", "date", "cells") if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    try:
        cells_of(summary)
        pd.Timestamp(summary["date"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"bad cells or date: {exc}") from None
    return summary


def comparable_baseline(path: Path, preset: str, replacing: bool) -> dict | None:
    """The baseline at `path` that tonight is compared with; None if there is none of `preset`. When tonight
    replaces it (--update-baseline), one that cannot be read or holds another preset is only reported."""
    try:
        baseline = read_baseline(path)
    except CifarbenchError as exc:
        if not replacing:
            raise
        print(f"cifarbench nightly: {exc}; replacing it tonight", file=sys.stderr)
        return None
    if baseline and baseline["preset"] != preset:
        if not replacing:
            raise ConfigError(f"{path} holds preset {baseline['preset']!r}, tonight is {preset!r}: "
                              "promote a night of this preset with --update-baseline, or set nightly.baseline")
        return None
    return baseline
