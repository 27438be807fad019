"""Apply a written budget rule to `cifarbench calibrate` outputs: per architecture, the cheapest candidate (mean
seconds per run, measured in that calibration) whose mean validation accuracy is at most `--tolerance` points
below the best candidate's mean (docs/calibration/2026-12-03-budget-rule.md). Accuracies are compared exactly
(as counts of validation images: no float rounding decides a tie at the tolerance).

    python docs/calibration/choose.py docs/calibration/*-budget.json --tolerance 1.0
"""

from __future__ import annotations

import argparse
import json
import statistics
from fractions import Fraction
from pathlib import Path


def mean_accuracy(runs: list[dict]) -> Fraction:
    """Mean of the runs' final validation accuracies, exact: each is a count over the validation images."""
    return sum((Fraction(r["final_val_acc"]).limit_denominator(100_000) for r in runs), Fraction(0)) / len(runs)


def choose(out: dict, tolerance: Fraction) -> tuple[dict, list[tuple[dict, Fraction, float]]]:
    rows = [(c, mean_accuracy(c["runs"]), statistics.fmean(r["seconds"] for r in c["runs"])) for c in out["candidates"]]
    best = max(acc for _, acc, _ in rows)
    within = [row for row in rows if best - row[1] <= tolerance]
    return min(within, key=lambda row: row[2])[0], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--tolerance", type=Fraction, default=Fraction(1), help="validation points (default 1.0)")
    args = parser.parse_args()
    tolerance = args.tolerance / 100
    for path in args.files:
        out = json.loads(path.read_text())
        chosen, rows = choose(out, tolerance)
        print(f"{out['arch']} ({path.name}; seeds {out['seeds']}, commit {out.get('provenance', {}).get('git_commit', '?')[:7]}, {out.get('made', '?')[:10]}):")
        best = max(acc for _, acc, _ in rows)
        for cand, acc, seconds in rows:
            mark = "chosen" if cand is chosen else ("within" if best - acc <= tolerance else "")
            print(f"  {cand['changes'] or '(the preset as it is)':40s} val {float(100 * acc):6.2f} %  "
                  f"{float(100 * (acc - best)):+6.2f} vs best  {seconds:6.1f} s/run  {mark}")


if __name__ == "__main__":
    main()
