"""A stage's progress as one plain line per finished piece of work: `[done/total, elapsed, ~left]`, with the
time left estimated from a cost model (the train stage's runs, the tune stage's trials). No terminal control
codes: a CI log keeps one line per event."""

from __future__ import annotations

import time


class Progress:
    """Pieces done of the total, time elapsed and an estimate of the time left: the elapsed time scaled by the
    cost still to do over the cost done so far, in the units of the caller's cost model (any positive
    measure proportional to the time a piece takes: epochs x images x FLOPs for a run)."""

    def __init__(self, costs: list[float], unit: str = ""):
        self.total, self.left, self.done, self.cost_done = len(costs), sum(costs), 0, 0.0
        self.unit = f" {unit}" if unit else ""  # "trials": [3/12 trials, ...]
        self.start = time.monotonic()

    def add(self, cost: float) -> None:
        """One more piece of work, found after the start (a trial queued again after its worker died)."""
        self.total, self.left = self.total + 1, self.left + cost

    def finished(self, cost: float, planned: float | None = None) -> str:
        """Count one piece as done, `cost` of it spent (less than the `planned` cost it was counted at when it
        stopped early: a pruned trial); the line that says where the work stands."""
        planned = cost if planned is None else planned
        self.done, self.cost_done, self.left = self.done + 1, self.cost_done + cost, self.left - planned
        elapsed = time.monotonic() - self.start
        eta = elapsed * max(self.left, 0.0) / self.cost_done if self.cost_done > 0 else 0.0
        return f"[{self.done}/{self.total}{self.unit}, {clock(elapsed)} elapsed, ~{clock(eta)} left]"


def clock(seconds: float) -> str:
    """0:42, 12:05, 1:02:03."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"
