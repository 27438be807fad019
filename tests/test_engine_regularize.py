"""L1, weight decay, early stopping, optimizers and schedules — checked through one real training step
where possible, so the test covers the engine's loop and not only a helper."""

from __future__ import annotations

import math

import pytest
import torch

from cifarbench.engine import OPTIMIZERS, ScheduleConfig, fit
from cifarbench.engine.optim import SCHEDULES
from cifarbench.engine.regularize import EarlyStopping, l1_penalty, param_groups, split_decay
from engine_helpers import make_split, tiny_model, train_config
from engine_helpers import one_torch_thread  # noqa: F401 (autouse fixture)

DECAYED = ("conv.weight", "fc.weight")
EXCLUDED = ("conv.bias", "norm.weight", "norm.bias", "fc.bias")


def one_step(**overrides) -> tuple[dict, dict]:
    """Weights before and after one full-batch step (fp32, no augmentation) of the tiny model."""
    data = make_split(100)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    cfg = train_config(epochs=1, batch_size=100, fast=False, **overrides)
    fit(model, data, make_split(20, seed=1), cfg, seed=0)
    return before, dict(model.named_parameters())


def step_difference(base: dict, changed: dict) -> tuple[dict, dict]:
    """(w0, after(changed) - after(base)) per parameter: what the regularizer alone moved in one step."""
    w0, plain = one_step(**base)
    _, regularized = one_step(**changed)
    return w0, {k: (regularized[k] - plain[k]).detach() for k in plain}


def test_l1_adds_exactly_lambda_times_sum_abs_w():
    w = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5, -0.25]])]
    assert l1_penalty(w).item() == 3.75
    lam, lr = 0.01, 0.1
    sgd = {"optimizer": {"name": "sgd", "lr": lr}}
    w0, diff = step_difference(sgd, {**sgd, "l1": lam})
    for name in DECAYED:  # gradient of λ·Σ|w| is λ·sign(w): one SGD step moves w by -lr·λ·sign(w)
        assert torch.allclose(diff[name], -lr * lam * torch.sign(w0[name]), atol=1e-6)
    for name in EXCLUDED:
        assert torch.equal(diff[name], torch.zeros_like(diff[name]))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_reaches_weights_but_not_norm_or_bias(name):
    wd, lr = 0.1, 0.1  # sgd: coupled grad += wd·w; adamw: decoupled w -= lr·wd·w — both -lr·wd·w in step 1
    opt = {"name": name, "lr": lr}
    w0, diff = step_difference({"optimizer": opt}, {"optimizer": {**opt, "weight_decay": wd}})
    for n in DECAYED:
        assert torch.allclose(diff[n], -lr * wd * w0[n], atol=1e-6)
    for n in EXCLUDED:
        assert torch.equal(diff[n], torch.zeros_like(diff[n]))


def test_exclusion_can_be_turned_off():
    model = tiny_model()
    decay, no_decay = split_decay(model, exclude_norm_and_bias=True)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay) == sorted(DECAYED)
    assert sorted(names[id(p)] for p in no_decay) == sorted(EXCLUDED)
    assert len(split_decay(model, exclude_norm_and_bias=False)[0]) == len(DECAYED + EXCLUDED)
    groups = param_groups(model, 0.1, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]


def test_optimizer_registry_builds_the_named_optimizer():
    from cifarbench.engine import OptimizerConfig

    groups = lambda: param_groups(tiny_model(), 0.1, 0.0)  # noqa: E731
    momentum = OPTIMIZERS["momentum"](groups(), OptimizerConfig(name="momentum", lr=0.1, nesterov=True))
    assert isinstance(momentum, torch.optim.SGD) and momentum.defaults["nesterov"] and momentum.defaults["momentum"] == 0.9
    assert OPTIMIZERS["sgd"](groups(), OptimizerConfig(name="sgd", lr=0.1)).defaults["momentum"] == 0
    assert type(OPTIMIZERS["adam"](groups(), OptimizerConfig(name="adam", lr=0.1))) is torch.optim.Adam
    assert type(OPTIMIZERS["adamw"](groups(), OptimizerConfig(name="adamw", lr=0.1))) is torch.optim.AdamW


def test_early_stopping_rule():
    model = tiny_model()
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    accs = [0.5, 0.6, 0.605, 0.6, 0.7]
    stops = [stopper.update(epoch, acc, model) for epoch, acc in enumerate(accs, 1)]
    assert stops == [False, False, False, True, False]  # 0.605 is not better by more than 0.01
    assert (stopper.best, stopper.best_epoch) == (0.7, 5)


def test_early_stopping_cannot_fire_before_its_start():
    model = tiny_model()
    stopper = EarlyStopping(patience=1, min_delta=0.0, start_epoch=4)
    stops = [stopper.update(epoch, acc, model) for epoch, acc in enumerate([0.5, 0.4, 0.4, 0.4, 0.4, 0.6], 1)]
    assert stops == [False, False, False, False, True, False]  # plateau from epoch 2, a stop only after epoch 4
    assert stopper.best_epoch == 6


def test_a_fit_stops_early_only_past_start_fraction_of_its_epochs():
    cfg = train_config(epochs=12, early_stop={"enabled": True, "patience": 1, "start_fraction": 0.5},
                       optimizer={"name": "sgd", "lr": 0.05})
    result = fit(tiny_model(), make_split(200, random_labels=True), make_split(200, seed=1, random_labels=True), cfg,
                 seed=0)
    assert result.stopped_epoch > 6  # random labels plateau at once: without the rule it stopped at epoch 2


def test_early_stopping_stops_on_a_plateau_and_restores_best_weights():
    snapshots = {}
    model = tiny_model()
    record = lambda r: snapshots.__setitem__(r.epoch, {k: v.clone() for k, v in model.state_dict().items()})  # noqa: E731
    cfg = train_config(epochs=40, early_stop={"enabled": True, "patience": 2, "start_fraction": 0.0},
                       optimizer={"name": "sgd", "lr": 0.05})
    result = fit(model, make_split(200, random_labels=True), make_split(200, seed=1, random_labels=True), cfg, seed=0, on_epoch=record)
    assert result.status == "early_stopped" and result.stopped_epoch < 40
    assert result.stopped_epoch - result.best_epoch == 2 and len(result.history) == result.stopped_epoch
    assert result.best_val_acc == max(h["val_acc"] for h in result.history)
    best = snapshots[result.best_epoch]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, snapshots[result.stopped_epoch - 1][k]) for k, v in model.state_dict().items())


def test_plateau_lowers_lr_after_patience():
    plateau = SCHEDULES["plateau"](ScheduleConfig(name="plateau", plateau_patience=1, plateau_factor=0.5), 100, 10)
    factors = []
    for val_loss in [1.0, 0.9, 0.95, 0.92, 0.91, 0.95]:
        plateau.end_epoch(val_loss)
        factors.append(plateau.factor(0))
    assert factors == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_plateau_in_a_run_lowers_lr():
    cfg = train_config(epochs=6, schedule={"name": "plateau", "plateau_patience": 0, "plateau_factor": 0.5})
    result = fit(tiny_model(), make_split(100, random_labels=True), make_split(100, seed=1, random_labels=True), cfg, seed=0)
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == 0.05 and lrs[-1] < 0.05 and lrs == sorted(lrs, reverse=True)


def factors(name: str, total: int = 100, per_epoch: int = 10, **cfg) -> list[float]:
    schedule = SCHEDULES[name](ScheduleConfig(name=name, **cfg), total, per_epoch)
    return [schedule.factor(step) for step in range(total)]


def test_schedules_shapes():
    assert factors("none") == [1.0] * 100
    assert factors("step", step_size=3, gamma=0.5)[29:31] == [1.0, 0.5]  # epoch 3 starts at step 30
    multistep = factors("multistep", milestones=(0.5, 0.75), gamma=0.1)
    assert multistep[49] == 1 and multistep[50] == pytest.approx(0.1) and multistep[75] == pytest.approx(0.01)
    cosine = factors("cosine")
    assert cosine[0] == 1 and cosine[50] == pytest.approx(0.5) and cosine[-1] < 0.001
    onecycle = factors("onecycle", peak_fraction=0.25)
    assert onecycle[24] == 1 and onecycle[-1] == 0 and onecycle[0] == pytest.approx(0.04)
    warm = factors("cosine", warmup_epochs=2)
    assert warm[0] == pytest.approx(1 / 20) and warm[19] == 1 and warm[20] == 1
    assert all(math.isfinite(f) and 0 <= f <= 1 for name in SCHEDULES for f in factors(name, warmup_epochs=1))
