"""Engine config sections: defaults, strictness, and names checked against the registries."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cifarbench.config import parse_section
from cifarbench.engine import OPTIMIZERS, SCHEDULES, OptimizerConfig, ScheduleConfig, TrainConfig, lookup
from cifarbench.errors import ConfigError

MINIMAL = {"epochs": 3, "optimizer": {"name": "adam", "lr": 1e-3}}


def test_minimal_config_has_documented_defaults():
    cfg = parse_section(TrainConfig, MINIMAL, "train")
    assert (cfg.batch_size, cfg.eval_batch_size, cfg.fast, cfg.compile, cfg.device) == (128, 512, True, False, "auto")
    assert cfg.augment.policy == "none" and cfg.schedule.name == "none" and not cfg.early_stop.enabled
    assert cfg.optimizer.exclude_norm_and_bias_from_decay and cfg.optimizer.nesterov


def test_frozen():
    cfg = parse_section(TrainConfig, MINIMAL, "train")
    with pytest.raises(ValidationError):
        cfg.epochs = 5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "epochz": 3}, r"train\.epochz: unknown key"),
        ({**MINIMAL, "optimizer": {"name": "adam", "lr": 1e-3, "mom": 0.9}}, r"train\.optimizer\.mom: unknown key"),
        ({**MINIMAL, "optimizer": {"name": "rmsprop", "lr": 0.1}}, "unknown optimizer 'rmsprop'; valid: adam, adamw, momentum, sgd"),
        ({**MINIMAL, "schedule": {"name": "linear"}}, "unknown schedule 'linear'; valid: cosine, multistep, none, onecycle, plateau, step"),
        ({**MINIMAL, "augment": {"policy": "crop+mixup"}}, r"train\.augment\.policy: .*unknown augmentation 'mixup'; valid: all, crop"),
        ({**MINIMAL, "optimizer": {"name": "sgd", "lr": 0}}, r"train\.optimizer\.lr"),
        ({**MINIMAL, "schedule": {"milestones": [0.75, 0.5]}}, "strictly increasing"),
        ({**MINIMAL, "schedule": {"milestones": [30, 60]}}, r"train\.schedule\.milestones\.0"),
        ({**MINIMAL, "augment": {"scale_range": [1.2, 0.8]}}, "0 < lo <= hi"),
        ({**MINIMAL, "schedule": {"warmup_epochs": 4}}, "exceeds epochs=3"),
        ({**MINIMAL, "device": "tpu9"}, "unknown device 'tpu9'"),
    ],
)
def test_invalid_configs_name_the_key_and_the_fix(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(TrainConfig, raw, "train")


def test_every_registered_name_is_accepted():
    for name in OPTIMIZERS:
        OptimizerConfig(name=name, lr=0.1)
    for name in SCHEDULES:
        ScheduleConfig(name=name)


def test_lookup_lists_valid_names():
    assert lookup(OPTIMIZERS, "sgd", "optimizer") is OPTIMIZERS["sgd"]
    with pytest.raises(ConfigError, match="unknown optimizer 'lbfgs'; valid: adam, adamw, momentum, sgd"):
        lookup(OPTIMIZERS, "lbfgs", "optimizer")
