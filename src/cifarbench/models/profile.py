"""Size and speed of a model: parameters, forward FLOPs per image, training/inference images per second."""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

IMAGE_SHAPE = (3, 32, 32)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module) -> int:
    """Forward FLOPs of one 3x32x32 image as `torch.utils.flop_counter` counts them: matrix multiplies and
    convolutions only, one multiply-add = 2 FLOPs (norms, activations, pooling are not counted)."""
    was_training = model.training
    model.eval()
    # oneDNN's fused LSTM/GRU kernels are invisible to the counter; without them RNNs run as matmuls.
    # (Toggling oneDNN warns that TF32 needs an Intel GPU, which is irrelevant here.)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", "TF32 acceleration", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *IMAGE_SHAPE))
    model.train(was_training)
    return counter.get_total_flops()


def throughput(
    model: nn.Module,
    *,
    batch_size: int = 128,
    train: bool,
    dtype: Literal["fp32", "bf16"] = "fp32",
    channels_last: bool = False,
    warmup: int = 1,
    repeats: int = 5,
    max_seconds: float = 10.0,
) -> float:
    """Images/s of training steps (forward, backward, SGD update) or of inference on random inputs.

    After `warmup` untimed steps, times single steps until `repeats` are done or `max_seconds` have passed
    (at least one), and returns batch_size / median step time. Works on a copy; `model` is left untouched.
    """
    model = copy.deepcopy(model).train(train)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, *IMAGE_SHAPE).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # a tiny step; the weights do not matter here
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        if not train:
            with torch.inference_mode(), autocast:
                model(x)
            return
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times, start = [], time.perf_counter()
    while not times or (len(times) < repeats and time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)
