"""Training one (architecture, ablation, seed) run: `fit` returns its history and status; `evaluate`
returns loss, accuracy, per-class accuracy and the confusion matrix. Nothing here prints or logs.

Data stay uint8 tensors on the device (NCHW, converted once from the Split's NHWC); each batch is
gathered, augmented and normalized there (see `augment`). Randomness: the shuffle order and the augmentation draw from two `torch.Generator`s
seeded by `seed`; dropout draws from the global RNG, which `fit` seeds inside `torch.random.fork_rng`
(the caller's RNG is left as it was). Model initialization is the caller's: seed before `build_model`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.data.splits import Split
from cifarbench.engine.augment import build_augment, normalize, to_nchw
from cifarbench.engine.checkpoint import load_checkpoint, save_checkpoint
from cifarbench.engine.config import TrainConfig
from cifarbench.engine.fast import FastPaths, choose, resolve_device
from cifarbench.engine.optim import OPTIMIZERS, SCHEDULES, set_lr
from cifarbench.engine.regularize import EarlyStopping, l1_penalty, param_groups, split_decay

RUNNING, COMPLETED, EARLY_STOPPED, DIVERGED = "running", "completed", "early_stopped", "diverged"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the epoch's (augmented) batches, without the L1 term
    train_acc: float  # on those batches, in train mode (0-1)
    val_loss: float  # plain cross-entropy (no label smoothing), eval mode
    val_acc: float
    lr: float  # of the epoch's last step
    seconds: float  # training + validation wall time
    images_per_s: float  # training images per second of training time (validation excluded)


@dataclass
class FitResult:
    history: list[dict]  # EpochRecord fields, one dict per finished epoch
    status: str  # completed | early_stopped | diverged
    stopped_epoch: int  # last epoch run (the diverging one for `diverged`)
    best_epoch: int  # 0 when no epoch finished
    best_val_acc: float
    fast_paths: dict
    seconds: float  # sum of the epochs' seconds, across resumes


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    per_class_accuracy: list[float]  # nan for a class absent from the split
    confusion: list[list[int]] = field(repr=False)  # [true][predicted]


def evaluate(
    model: nn.Module, split: Split, *, batch_size: int = 512, device: str | torch.device | None = None, fast: bool = True,
    cpu_paths: tuple[str | None, bool] | None = None,
) -> EvalResult:
    """Evaluate in eval mode without gradients; the model's train/eval mode is restored afterwards."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    paths = choose(device, fast=fast, compile=False, cpu=cpu_paths)
    return _evaluate(model, to_nchw(split.images.to(device)), split.labels.to(device), batch_size, paths)


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint: Path | str | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    cpu_paths: tuple[str | None, bool] | None = None,
) -> FitResult:
    """Train `model` in place for `cfg.epochs` epochs (or until early stopping or divergence).

    `checkpoint`: resumed from when it exists, else written (atomically) after every epoch; a finished
    run's checkpoint returns its result without training. `on_epoch` gets each epoch's record after the
    checkpoint is written; an exception it raises (e.g. optuna's TrialPruned) propagates. `cpu_paths`:
    (autocast dtype, channels_last) measured for this model on this CPU (cifarbench.fastpaths); a resumed
    run keeps the ones its checkpoint was trained with, whatever the machine's cache says now.
    Weight decay: coupled L2 for sgd/momentum/adam, decoupled for adamw; none on biases and norm
    layers unless `exclude_norm_and_bias_from_decay` is off. With early stopping enabled the model
    ends with its best-validation weights (also after an early stop or a divergence).
    """
    device = resolve_device(cfg.device)
    state = None
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, config=cfg.model_dump(mode="json"), seed=seed)  # None: unreadable
    paths = _resumed_paths(choose(device, fast=cfg.fast, compile=cfg.compile, cpu=cpu_paths), state)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        run = _Run(model, train, val, cfg, seed, paths)
        try:
            if state is not None:
                run.restore(state)
            while run.status == RUNNING:
                record = run.epoch()
                if checkpoint is not None:
                    save_checkpoint(checkpoint, run.state_dict())
                if on_epoch is not None and record is not None:
                    on_epoch(record)
            return run.result()
        finally:
            model.to(memory_format=torch.contiguous_format)


class _Run:
    """The state of one fit: everything a checkpoint holds, and one epoch of training."""

    def __init__(self, model: nn.Module, train: Split, val: Split, cfg: TrainConfig, seed: int, paths: FastPaths):
        self.cfg, self.seed, self.paths = cfg, seed, paths
        device = torch.device(paths.device)
        self.model = model.to(device, memory_format=torch.channels_last if paths.channels_last else torch.preserve_format)
        self.forward = torch.compile(model) if paths.compiled else model
        self.train_x, self.train_y = to_nchw(train.images.to(device)), train.labels.to(device)
        self.val_x, self.val_y = to_nchw(val.images.to(device)), val.labels.to(device)
        self.batch = min(cfg.batch_size, len(train))
        self.steps_per_epoch = len(train) // self.batch  # the last partial batch is dropped

        opt = cfg.optimizer
        self.optimizer = OPTIMIZERS[opt.name](
            param_groups(model, opt.lr, opt.weight_decay, opt.exclude_norm_and_bias_from_decay), opt
        )
        self.l1_params = split_decay(model, opt.exclude_norm_and_bias_from_decay)[0] if cfg.l1 else []
        self.schedule = SCHEDULES[cfg.schedule.name](cfg.schedule, cfg.epochs * self.steps_per_epoch, self.steps_per_epoch)
        stop = cfg.early_stop
        self.early = EarlyStopping(stop.patience, stop.min_delta, math.ceil(stop.start_fraction * cfg.epochs)) \
            if stop.enabled else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=paths.autocast == "float16")
        self.augment = build_augment(cfg.augment)
        self.g_shuffle = torch.Generator(device).manual_seed(seed)
        self.g_augment = torch.Generator(device).manual_seed(seed + 1)
        # A CPU sync per step costs nothing; on a GPU, check for NaN every 50 steps to keep it queued.
        self.check_every = 1 if device.type == "cpu" else 50
        self.history: list[dict] = []
        self.step, self.status, self.stopped_epoch = 0, RUNNING, 0

    # --- one epoch ---------------------------------------------------------------------------------------

    def epoch(self) -> EpochRecord | None:
        """Train and validate one epoch; None (and status diverged) when the loss stopped being finite."""
        epoch = len(self.history) + 1
        start = time.perf_counter()
        trained = self._train_epoch()
        train_seconds = time.perf_counter() - start
        if trained is None:
            self._finish(DIVERGED, epoch)
            return None
        val = _evaluate(self.model, self.val_x, self.val_y, self.cfg.eval_batch_size, self.paths)
        record = EpochRecord(
            epoch, trained[0], trained[1], val.loss, val.accuracy, self.optimizer.param_groups[0]["lr"],
            time.perf_counter() - start, self.steps_per_epoch * self.batch / train_seconds,
        )
        self.history.append(asdict(record))
        self.schedule.end_epoch(val.loss)
        stop = self.early is not None and self.early.update(epoch, val.accuracy, self.model)
        if stop or epoch == self.cfg.epochs:
            self._finish(EARLY_STOPPED if stop else COMPLETED, epoch)
        return record

    def _train_epoch(self) -> tuple[float, float] | None:
        self.model.train()
        cfg, n = self.cfg, self.batch
        order = torch.randperm(len(self.train_y), generator=self.g_shuffle, device=self.train_y.device)
        loss_sum = torch.zeros((), device=self.train_y.device)
        correct = torch.zeros((), dtype=torch.long, device=self.train_y.device)
        for i in range(self.steps_per_epoch):
            idx = order[i * n : (i + 1) * n]
            x = self.augment(self.train_x.index_select(0, idx), self.g_augment)
            y = self.train_y.index_select(0, idx)
            set_lr(self.optimizer, self.schedule.factor(self.step))
            with self.paths.autocast_context():
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            loss_sum += loss.detach() * n
            if (i + 1) % self.check_every == 0 and not torch.isfinite(loss_sum):
                return None
            total = loss + cfg.l1 * l1_penalty(self.l1_params) if cfg.l1 else loss
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            correct += (logits.argmax(1) == y).sum()
        seen = self.steps_per_epoch * n
        mean_loss = loss_sum.item() / seen
        return (mean_loss, correct.item() / seen) if math.isfinite(mean_loss) else None

    def _finish(self, status: str, epoch: int) -> None:
        self.status, self.stopped_epoch = status, epoch
        if self.early is not None:
            self.early.restore(self.model)

    # --- results and checkpoints ---------------------------------------------------------------------------

    def result(self) -> FitResult:
        if self.early is not None:
            best_epoch, best_acc = self.early.best_epoch, max(self.early.best, 0.0)
        else:
            accs = [h["val_acc"] for h in self.history]
            best_acc = max(accs, default=0.0)
            best_epoch = accs.index(best_acc) + 1 if accs else 0
        return FitResult(
            self.history, self.status, self.stopped_epoch, best_epoch, best_acc, self.paths.as_dict(),
            sum(h["seconds"] for h in self.history),
        )

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.model_dump(mode="json"),
            "seed": self.seed,
            "fast_paths": self.paths.as_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "early_stop": self.early.state_dict() if self.early is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": _rng_states(self),
            "history": self.history,
            "step": self.step,
            "status": self.status,
            "stopped_epoch": self.stopped_epoch,
        }

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint's `state` (load_checkpoint's, checked against this run's config and seed)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.early is not None:
            self.early.load_state_dict(state["early_stop"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_states(self, state["rng"])
        self.history, self.step = state["history"], state["step"]
        self.status, self.stopped_epoch = state["status"], state["stopped_epoch"]


def _resumed_paths(chosen: FastPaths, state: dict | None) -> FastPaths:
    """The fast paths a run continues with: its checkpoint's autocast and channels_last when it was trained on
    this device (a run must not switch precision halfway: its numbers would be neither run's, and the
    optimizer and GradScaler states belong to the old choice), else `chosen`."""
    saved = (state or {}).get("fast_paths")
    if not saved or saved.get("device") != chosen.device:
        return chosen
    return dataclasses.replace(chosen, autocast=saved["autocast"], channels_last=saved["channels_last"])


def _rng_states(run: _Run) -> dict:
    states = {"shuffle": run.g_shuffle.get_state(), "augment": run.g_augment.get_state(), "cpu": torch.get_rng_state()}
    if run.paths.device.startswith("cuda"):
        states["cuda"] = torch.cuda.get_rng_state(run.paths.device)
    return states


def _set_rng_states(run: _Run, states: dict) -> None:
    run.g_shuffle.set_state(states["shuffle"])
    run.g_augment.set_state(states["augment"])
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and run.paths.device.startswith("cuda"):
        torch.cuda.set_rng_state(states["cuda"], run.paths.device)


@torch.inference_mode()
def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, paths: FastPaths) -> EvalResult:
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=labels.device, dtype=torch.float64)
    counts = None
    for i in range(0, len(labels), batch_size):
        x = normalize(images[i : i + batch_size])
        y = labels[i : i + batch_size]
        with paths.autocast_context():
            logits = model(x).float()
        k = logits.shape[1]
        loss += F.cross_entropy(logits, y, reduction="sum")
        batch_counts = torch.bincount(y * k + logits.argmax(1), minlength=k * k)
        counts = batch_counts if counts is None else counts + batch_counts
    model.train(was_training)
    confusion = counts.view(k, k).cpu()
    per_class = confusion.diag().double() / confusion.sum(1).double()  # nan where a class has no images
    return EvalResult(
        loss.item() / len(labels), confusion.diag().sum().item() / len(labels), per_class.tolist(), confusion.tolist()
    )
