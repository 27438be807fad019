"""Engine train-step throughput vs a plain fp32 PyTorch loop, same model, batch and optimizer.

    python tests/benchmarks/bench_train_step.py [--models resnet18:0.125 vgg11:0.25] [--steps 8] [--repeats 9]
                                                [--threads N] [--with-bf16]

Per model, in one process and interleaved (many short runs, the variants' order rotating each round) so
drift on a shared CPU hits all alike; each number is the median over repeats after one warm-up round,
with the best run beside it (contention only ever slows a run down).
- plain: images already normalized float NCHW, SGD-Nesterov, forward / CE / backward / step, fp32.
- engine fast: `fit` for one epoch of `steps` batches, `fast=True` (the fast paths this device gets),
  no augmentation; `images_per_s` of its history (training time only: gather, normalize, step).
- engine exact: the same with `fast=False` (fp32, contiguous) — the engine's own overhead.
- plain bf16 (with --with-bf16): the plain loop under CPU bf16 autocast + channels_last, whatever the CPU,
  to check the engine's choice of autocast on this machine.
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
from cifarbench.fastpaths import unmeasured
from cifarbench.models import build_model

BATCH = 128


def plain_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> float:
    """Images/s of the textbook loop over the pre-normalized batches in x, y."""
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(y), BATCH):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x[i : i + BATCH])
        loss = F.cross_entropy(logits.float(), y[i : i + BATCH])
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


def bench(name: str, width: float, steps: int, repeats: int, with_bf16: bool) -> None:
    g = torch.Generator().manual_seed(0)
    n = steps * BATCH
    train = Split(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g))
    val = Split(train.images[:BATCH], train.labels[:BATCH])
    x = to_input(train.images)
    torch.manual_seed(0)
    model = build_model(name, width=width)
    variants = {
        "plain fp32": lambda m: plain_loop(m, x, train.labels),
        "engine fast": lambda m: engine(m, train, val, fast=True)[0],
        "engine exact": lambda m: engine(m, train, val, fast=False)[0],
    }
    if with_bf16:
        variants["plain bf16"] = lambda m: plain_loop(m, x, train.labels, bf16=True)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats + 1):
        order = list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]
        for key in order:
            rate = variants[key](copy.deepcopy(model))
            if r:  # round 0 warms oneDNN's kernel caches
                rates[key].append(rate)
    paths = engine(copy.deepcopy(model), Split(train.images[:BATCH], train.labels[:BATCH]), val, fast=True)[1]
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{name} width {width} ({params / 1e6:.2f}M params), batch {BATCH}, {steps} steps x {repeats} repeats")
    print(f"  fast paths: autocast={paths['autocast']} channels_last={paths['channels_last']} device={paths['device']}")
    for k, v in rates.items():
        print(f"  {k:13s} median {med[k]:6.0f} img/s  best {best[k]:6.0f}  (runs: {', '.join(f'{x:.0f}' for x in v)})")
    print(f"  speed-up engine fast / plain fp32: median {med['engine fast'] / med['plain fp32']:.2f}x, "
          f"best {best['engine fast'] / best['plain fp32']:.2f}x")
    print(f"  overhead engine exact vs plain fp32: median {100 * (1 - med['engine exact'] / med['plain fp32']):+.1f}%, "
          f"best {100 * (1 - best['engine exact'] / best['plain fp32']):+.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18:0.125", "vgg11:0.25"], help="name:width")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--with-bf16", action="store_true", help="also time the plain loop under CPU bf16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_bf16 = unmeasured()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, unmeasured CPU autocast choice: {cpu_bf16}")
    for spec in args.models:
        name, _, width = spec.partition(":")
        bench(name, float(width or 1.0), args.steps, args.repeats, args.with_bf16)


if __name__ == "__main__":
    main()
