"""The nightly files: a night's summary as JSON, the baseline (a promoted night) and the history.

    <baseline>                          {"preset", "commit", "date", "cells": [summary rows]}
    <history>/<YYYYMMDDTHHMMSSZ>-<commit>.json   the same, plus "verdicts" (counts and the failing cells)

Dates are UTC; file names sort in time order. Written atomically (cifarbench.io).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from cifarbench.errors import CifarbenchError
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
    """The baseline's summary, or None before the first `--update-baseline`."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        summary = read_json(path)
        cells_of(summary)
        return summary
    except (ValueError, KeyError, TypeError) as exc:
        raise CifarbenchError(f"{path} is not a nightly baseline ({exc}); promote a night with --update-baseline") from None


def write_baseline(path: Path | str, summary: dict) -> None:
    write_json_atomic(path, summary)


def append_history(folder: Path | str, summary: dict, verdicts: dict) -> Path:
    stamp = datetime.fromisoformat(summary["date"]).strftime("%Y%m%dT%H%M%SZ")
    path = Path(folder) / f"{stamp}-{summary['commit'][:10]}.json"
    write_json_atomic(path, {**summary, "verdicts": verdicts})
    return path


def read_history(folder: Path | str, preset: str) -> pd.DataFrame:
    """Every night of `preset`, one row per (night, cell): date, commit and the SUMMARY columns."""
    frames = []
    for path in sorted(Path(folder).glob("*.json")):
        summary = read_json(path)
        if summary.get("preset") == preset:
            cells = cells_of(summary)
            frames.append(cells.assign(date=pd.Timestamp(summary["date"]), commit=summary["commit"]))
    if not frames:
        return pd.DataFrame(columns=["date", "commit", *SUMMARY])
    return pd.concat(frames, ignore_index=True)
