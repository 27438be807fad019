"""The training engine: `fit` one run and `evaluate` a model, configured by the sections in `config`.

Augmentations, optimizers and schedules are chosen by name from `AUGMENTATIONS`, `OPTIMIZERS` and
`SCHEDULES`; an unknown name is a ConfigError listing the valid ones.
"""

from cifarbench.engine.augment import AUGMENTATIONS, CIFAR10_MEAN, CIFAR10_STD, Augment, build_augment, to_input
from cifarbench.engine.config import AugmentConfig, EarlyStopConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from cifarbench.engine.fast import FastPaths
from cifarbench.engine.optim import OPTIMIZERS, SCHEDULES
from cifarbench.engine.registry import lookup
from cifarbench.engine.train import EpochRecord, EvalResult, FitResult, evaluate, fit

__all__ = [
    "AUGMENTATIONS", "CIFAR10_MEAN", "CIFAR10_STD", "OPTIMIZERS", "SCHEDULES",
    "Augment", "AugmentConfig", "EarlyStopConfig", "EpochRecord", "EvalResult", "FastPaths", "FitResult",
    "OptimizerConfig", "ScheduleConfig", "TrainConfig",
    "build_augment", "evaluate", "fit", "lookup", "to_input",
]
