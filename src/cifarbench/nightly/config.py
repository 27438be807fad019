"""The `nightly:` section of params.yaml. Accuracies are fractions (0.05 = 5 accuracy points)."""

from __future__ import annotations

from pydantic import Field

from cifarbench import paths
from cifarbench.config import Section


class NightlyConfig(Section):
    k: float = Field(3.0, gt=0, description="a cell regresses when its mean test accuracy drops by more than "
                                            "max(k * sigma, floor); sigma: standard error of the difference")
    floor: float = Field(0.05, ge=0, lt=1, description="smallest accuracy drop (fraction) that counts")
    max_slowdown: float = Field(0.25, gt=0, lt=1, description="throughput regresses below (1 - this) x baseline, "
                                                              "compared only on the same recorded hardware")
    baseline: str = Field(str(paths.NIGHTLY_BASELINE), min_length=1)
    history: str = Field(str(paths.NIGHTLY_HISTORY), min_length=1, description="one JSON file per night")
    report: str = Field(str(paths.NIGHTLY_REPORT), min_length=1, description="the HTML and the plot go beside it")
