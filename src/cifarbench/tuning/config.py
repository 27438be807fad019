"""params.yaml `tune`: the storage, the sampler, the ranges searched, the pruner (chosen by name)."""

from __future__ import annotations

from typing import Annotated

import optuna
from pydantic import AfterValidator, Field, PositiveFloat, field_validator

from cifarbench.config import MAX_SEED, ListAsTuple, Section
from cifarbench.engine.registry import check_name


def _increasing(bounds: tuple[float, float]) -> tuple[float, float]:
    if not bounds[0] < bounds[1]:
        raise ValueError(f"a range is [low, high] with low < high, got {list(bounds)}")
    return bounds


LogRange = Annotated[tuple[PositiveFloat, PositiveFloat], ListAsTuple, AfterValidator(_increasing)]

PRUNERS = {
    # Keep the best 1/reduction_factor of trials at epochs min_epochs * reduction_factor^k (Li et al. 2020, ASHA).
    "successive_halving": lambda p, startup: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=p.min_epochs, reduction_factor=p.reduction_factor),
    # Stop a trial below the median of earlier trials at the same epoch.
    "median": lambda p, startup: optuna.pruners.MedianPruner(n_startup_trials=startup),
    "none": lambda p, startup: optuna.pruners.NopPruner(),
}


class PrunerConfig(Section):
    """Stops unpromising trials on their per-epoch validation accuracy."""

    name: str = "successive_halving"
    min_epochs: int = Field(1, ge=1, description="epochs every trial trains before it may be pruned")
    reduction_factor: int = Field(3, ge=2, description="successive_halving: 1 in this many trials goes on at each rung")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        return check_name(PRUNERS, v, "pruner")


class TuneConfig(Section):
    storage: str = Field("optuna/studies.journal", min_length=1, description="journal file path or RDB URL")
    sampler_seed: int = Field(0, ge=0, le=MAX_SEED)
    startup_trials: int = Field(4, ge=1, description="random trials before TPE (and the median pruner) use results")
    lr: dict[str, LogRange] = Field(min_length=1, description="log-uniform peak lr range per optimizer name")
    weight_decay: LogRange = (1.0e-6, 1.0e-2)
    pruner: PrunerConfig = PrunerConfig()
    heartbeat_s: int = Field(60, ge=1, description="RDB storages: trial heartbeat period; silent 3x this = dead")
