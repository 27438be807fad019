"""Engine train-step throughput vs a plain fp32 PyTorch loop, same model, batch and optimizer.

    python tests/benchmarks/bench_train_step.py [--models resnet18:0.125 vgg11:0.25] [--steps 20] [--repeats 5] [--threads N]

Per model, in one process and interleaved (plain, engine fast, engine exact) so drift from a shared CPU
hits all three alike; each number is the median over repeats after one warm-up round.
- plain: images already normalized float NCHW, SGD-Nesterov, forward / CE / backward / step, fp32.
- engine fast: `fit` for one epoch of `steps` batches, `fast=True` (the fast paths this device gets),
  no augmentation; `images_per_s` of its history (training time only: gather, normalize, step).
- engine exact: the same with `fast=False` (fp32, contiguous) — the engine's own overhead.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from cifarbench.data.splits import Split
from cifarbench.engine import TrainConfig, fit, to_input
from cifarbench.engine.fast import autocast_dtype
from cifarbench.models import build_model

BATCH = 128


def plain_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Images/s of the textbook loop over the pre-normalized batches in x, y."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(y), BATCH):
        loss = F.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(y) / (time.perf_counter() - start)


def engine(model: torch.nn.Module, train: Split, val: Split, fast: bool) -> tuple[float, dict]:
    cfg = TrainConfig.model_validate({
        "epochs": 1, "batch_size": BATCH, "fast": fast,
        "optimizer": {"name": "momentum", "lr": 0.01, "weight_decay": 5e-4, "exclude_norm_and_bias_from_decay": False},
    })
    result = fit(model, train, val, cfg, seed=0)
    return result.history[0]["images_per_s"], result.fast_paths


def bench(name: str, width: float, steps: int, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    n = steps * BATCH
    train = Split(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g))
    val = Split(train.images[:BATCH], train.labels[:BATCH])
    x = to_input(train.images)
    torch.manual_seed(0)
    model = build_model(name, width=width)
    rates: dict[str, list[float]] = {"plain fp32": [], "engine fast": [], "engine exact": []}
    for r in range(repeats + 1):
        plain = plain_loop(copy.deepcopy(model), x, train.labels)
        fast, paths = engine(copy.deepcopy(model), train, val, fast=True)
        exact, _ = engine(copy.deepcopy(model), train, val, fast=False)
        if r:  # round 0 warms oneDNN's kernel caches
            for key, value in zip(rates, (plain, fast, exact)):
                rates[key].append(value)
    med = {k: statistics.median(v) for k, v in rates.items()}
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{name} width {width} ({params / 1e6:.2f}M params), batch {BATCH}, {steps} steps x {repeats} repeats")
    print(f"  fast paths: autocast={paths['autocast']} channels_last={paths['channels_last']} device={paths['device']}")
    for k, v in rates.items():
        print(f"  {k:13s} {med[k]:8.0f} img/s   (runs: {', '.join(f'{x:.0f}' for x in v)})")
    print(f"  speed-up fast/plain: {med['engine fast'] / med['plain fp32']:.2f}x")
    print(f"  overhead exact vs plain: {100 * (1 - med['engine exact'] / med['plain fp32']):+.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18:0.125", "vgg11:0.25"], help="name:width")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_bf16 = autocast_dtype(torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU autocast choice: {cpu_bf16}")
    for spec in args.models:
        name, _, width = spec.partition(":")
        bench(name, float(width or 1.0), args.steps, args.repeats)


if __name__ == "__main__":
    main()
