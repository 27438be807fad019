"""fit and evaluate: learning, results, determinism, divergence, callbacks and in-process resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cifarbench.data.splits import Split
from cifarbench.engine import EpochRecord, evaluate, fit
from cifarbench.engine.config import MAX_LR
from cifarbench.errors import ConfigError
from engine_helpers import comparable, make_split, tiny_model, train_config
from engine_helpers import one_torch_thread  # noqa: F401 (autouse fixture)

HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    return make_split(500), make_split(200, seed=1)


def test_tiny_model_learns_tiny_dataset(data):
    model = tiny_model()
    cfg = train_config(epochs=4, augment={"policy": "standard"}, schedule={"name": "onecycle"}, optimizer={"weight_decay": 5e-4})
    result = fit(model, *data, cfg, seed=0)
    assert result.status == "completed" and result.stopped_epoch == 4 and len(result.history) == 4
    assert set(result.history[0]) == HISTORY_KEYS
    assert result.history[-1]["val_acc"] > 0.5  # chance is 0.1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_acc == max(h["val_acc"] for h in result.history)
    assert set(result.fast_paths) == {"device", "autocast", "channels_last", "compiled", "torch"}
    assert result.fast_paths["device"] == "cpu" and result.fast_paths["torch"] == torch.__version__
    assert result.seconds == pytest.approx(sum(h["seconds"] for h in result.history))
    assert evaluate(model, data[1]).accuracy == result.history[-1]["val_acc"]
    assert model.conv.weight.is_contiguous()  # channels_last undone at the end


def test_same_seed_same_run_different_seed_different_run(data):
    cfg = train_config(augment={"policy": "all"})
    runs = [fit(tiny_model(dropout=0.3), *data, cfg, seed=s).history for s in (0, 0, 1)]
    assert comparable(runs[0]) == comparable(runs[1])
    assert comparable(runs[0]) != comparable(runs[2])


def test_fit_leaves_the_callers_rng_alone(data):
    model = tiny_model(dropout=0.5)  # seeds the global RNG itself
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, *data, train_config(epochs=1), seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("fast", [True, False])
def test_fast_switch_is_recorded(data, fast):
    result = fit(tiny_model(), *data, train_config(epochs=1, fast=fast), seed=0)
    assert result.fast_paths["channels_last"] is False  # CUDA only (see engine/fast.py)
    assert result.fast_paths["device"] == "cpu"
    if not fast:
        assert result.fast_paths["autocast"] is None


def test_fast_and_exact_fp32_agree_closely(data):
    fast, exact = (fit(tiny_model(), *data, train_config(epochs=1, fast=f), seed=0).history[0] for f in (True, False))
    assert fast["train_loss"] == pytest.approx(exact["train_loss"], rel=0.05)  # bf16 rounding at most


def test_huge_learning_rate_ends_diverged_without_exception(data):
    """The largest lr params.yaml accepts (MAX_LR) still diverges; the run ends cleanly."""
    model = tiny_model(batch_norm=False)
    result = fit(model, *data, train_config(epochs=5, optimizer={"name": "sgd", "lr": MAX_LR}), seed=0)
    assert result.status == "diverged"
    assert 1 <= result.stopped_epoch <= 5 and len(result.history) == result.stopped_epoch - 1
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_on_epoch_gets_records_and_its_exception_propagates(data, tmp_path):
    seen: list[EpochRecord] = []

    def prune(record: EpochRecord) -> None:
        seen.append(record)
        if record.epoch == 2:
            raise KeyboardInterrupt("pruned")

    with pytest.raises(KeyboardInterrupt, match="pruned"):
        fit(tiny_model(), *data, train_config(epochs=4), seed=0, checkpoint=tmp_path / "ckpt.pt", on_epoch=prune)
    assert [r.epoch for r in seen] == [1, 2] and 0 <= seen[0].val_acc <= 1
    assert (tmp_path / "ckpt.pt").is_file()


def test_resume_after_an_interruption_matches_an_uninterrupted_run(data, tmp_path):
    cfg = train_config(epochs=4, augment={"policy": "all"}, schedule={"name": "cosine", "warmup_epochs": 1},
                       early_stop={"enabled": True, "patience": 10})
    full = fit(tiny_model(dropout=0.3), *data, cfg, seed=7)

    def interrupt(record: EpochRecord) -> None:
        if record.epoch == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(dropout=0.3), *data, cfg, seed=7, checkpoint=ckpt, on_epoch=interrupt)
    resumed_model = tiny_model(seed=99, dropout=0.3)  # different init: everything must come from the checkpoint
    epochs_run = []
    resumed = fit(resumed_model, *data, cfg, seed=7, checkpoint=ckpt, on_epoch=lambda r: epochs_run.append(r.epoch))
    assert epochs_run == [3, 4]
    assert comparable(resumed.history) == comparable(full.history)
    assert (resumed.status, resumed.best_epoch, resumed.best_val_acc) == (full.status, full.best_epoch, full.best_val_acc)

    again = fit(tiny_model(seed=5), *data, cfg, seed=7, checkpoint=ckpt, on_epoch=lambda r: pytest.fail("retrained"))
    assert comparable(again.history) == comparable(full.history)  # a finished run is returned as it was


def test_checkpoint_of_another_run_is_refused(data, tmp_path):
    ckpt = tmp_path / "run.pt"
    fit(tiny_model(), *data, train_config(epochs=1), seed=0, checkpoint=ckpt)
    with pytest.raises(ConfigError, match="epochs"):
        fit(tiny_model(), *data, train_config(epochs=2), seed=0, checkpoint=ckpt)
    with pytest.raises(ConfigError, match="seed 0 -> 1"):
        fit(tiny_model(), *data, train_config(epochs=1), seed=1, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["status"] == "completed" and len(state["history"]) == 1


class Constant(nn.Module):
    """Always predicts `label`."""

    def __init__(self, label: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.bias + 10 * nn.functional.one_hot(torch.tensor(self.label), 10)).expand(len(x), 10)


def test_evaluate_confusion_rows_are_true_classes():
    split = make_split(100)
    result = evaluate(Constant(3), split, batch_size=30)
    counts = torch.bincount(split.labels, minlength=10).tolist()
    assert [row[3] for row in result.confusion] == counts
    assert sum(map(sum, result.confusion)) == 100
    assert result.accuracy == counts[3] / 100
    assert result.per_class_accuracy == [1.0 if k == 3 else 0.0 for k in range(10)]
    expected_loss = nn.functional.cross_entropy(Constant(3)(torch.zeros(100, 3, 32, 32)), split.labels).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_restores_train_mode():
    model = tiny_model().train()
    evaluate(model, make_split(20))
    assert model.training


def test_bf16_autocast_path_runs_where_the_cpu_would_choose_it(data):
    # This machine may lack bf16 instructions (then fastpaths picks fp32); pass the choice to run the path.
    model = tiny_model()
    result = fit(model, *data, train_config(epochs=1), seed=0, cpu_paths=("bfloat16", False))
    assert result.fast_paths["autocast"] == "bfloat16" and result.status == "completed"
    assert math.isfinite(result.history[0]["train_loss"]) and model.conv.weight.dtype == torch.float32
    assert evaluate(model, data[1]).accuracy == result.history[0]["val_acc"]
