"""What a run of each architecture costs: the engine's train step against a plain PyTorch loop, on this CPU.

    python tests/benchmarks/bench_train_step.py [--preset default] [--archs lenet5 googlenet] [--steps 8]
                                                [--repeats 9] [--threads N] [--with-bf16] [--params params.yaml]

Sample output (2026-12-03, AMD EPYC Zen 4 with AVX512-BF16, 2 cores, under `nice -n 19` while another
benchmark ran on them: noisy, for the format, not for the numbers), of
`python tests/benchmarks/bench_train_step.py --archs lenet5 googlenet --steps 4 --repeats 3`:

    2026-12-03 10:46, torch 2.14.1+cu130, 1 thread(s), preset default (params.yaml), baseline cells at the recipe's lr/wd
    CPU: AMD EPYC (AuthenticAMD, family 25, 2 core(s)), vector flags: sse2 avx fma avx2 avx512f avx512_bf16
    peak fp32 83 GFLOP/s = 1 core(s) x 2,596 MHz x 32 FLOPs/cycle
      assumption: AMD Zen 4 (family 25 with AVX-512): 2 x 256-bit FMA pipes, a 512-bit FMA takes both: 2 FMA x 8 fp32 lanes x 2
      clock: `cpu MHz` of /proc/cpuinfo (current, not boost)
    FLOPs: forward per image counted by torch.utils.flop_counter (convolutions, matmuls), as `cifarbench models`;
      share = img/s x 3 x forward / peak fp32 (a bf16 path can exceed what fp32 allows)

    lenet5: width 2, stem stride 1, 0.245M params, 3.80 MFLOPs/img forward; batch 64, momentum lr 0.05 wd 0.0005, augment standard; 4 steps x 3 repeats
      engine fast path: bf16+channels_last (measured fp32 1,376, bf16 1,616, bf16+channels_last 2,783 img/s); fit ran autocast=bfloat16 channels_last=True on cpu
      plain fp32    median   1,317 img/s  best   1,481  (runs: 1112, 1481, 1317)
      engine fast   median   1,895 img/s  best   2,357  (runs: 1711, 2357, 1895)
      engine exact  median   1,234 img/s  best   1,915  (runs: 1132, 1234, 1915)
      engine eval   median   4,723 img/s  best   5,082  (runs: 3567, 5082, 4723)
      engine fast / plain fp32: median 1.44x, best 1.59x
      overhead engine exact vs plain fp32: median +6.3%, best -29.4%
      share of peak fp32 FLOPs/s (train step 3 x forward): engine fast 26.0%, plain fp32 18.1%
      one run of preset default: 30 epochs x (960 train / 1,895 img/s + 500 val / 4,723 img/s) + 8,000 test = 15.2 + 4.9 s = 20.1 s x 1 thread(s) = 20.1 CPU-s

    googlenet: width 0.0625, stem stride 2, 0.026M params, 3.14 MFLOPs/img forward; batch 64, momentum lr 0.05 wd 0.0005, augment standard; 4 steps x 3 repeats
      engine fast path: bf16+channels_last (measured fp32 497, bf16 534, bf16+channels_last 866 img/s); fit ran autocast=bfloat16 channels_last=True on cpu
      plain fp32    median     264 img/s  best     352  (runs: 264, 352, 262)
      engine fast   median     345 img/s  best     372  (runs: 372, 323, 345)
      engine exact  median     264 img/s  best     276  (runs: 264, 276, 224)
      engine eval   median   1,565 img/s  best   1,647  (runs: 1394, 1647, 1565)
      engine fast / plain fp32: median 1.30x, best 1.06x
      overhead engine exact vs plain fp32: median +0.0%, best +21.6%
      share of peak fp32 FLOPs/s (train step 3 x forward): engine fast 3.9%, plain fp32 3.0%
      one run of preset default: 24 epochs x (960 train / 345 img/s + 500 val / 1,565 img/s) + 8,000 test = 66.8 + 12.8 s = 79.6 s x 1 thread(s) = 79.6 CPU-s

    Summary (medians; preset default, 1 thread(s)):
    arch | fast path | batch | MFLOPs/img | plain img/s | engine img/s | engine/plain | % peak engine | % peak plain | CPU-s/run
    --- | --- | --- | --- | --- | --- | --- | --- | --- | ---
    lenet5 | bf16+channels_last | 64 | 3.80 | 1,317 | 1,895 | 1.44x | 26.0 | 18.1 | 20.1
    googlenet | bf16+channels_last | 64 | 3.14 | 264 | 345 | 1.30x | 3.9 | 3.0 | 79.6

Per architecture, its baseline cell in the preset exactly as the plan resolves it from params.yaml
(`cifarbench.plan.resolve_cell`: model, width, batch, optimizer, augmentation), timed in one process and
interleaved (many short runs, the variants' order rotating each round) so drift on a shared CPU hits all
alike; each number is the median over repeats after one warm-up round, with the best run beside it
(contention only ever slows a run down). Random images: speed does not depend on what the pixels show.
- plain fp32: images already normalized float NCHW, the cell's optimizer (one parameter group),
  forward / cross-entropy / backward / step, fp32, no augmentation: the textbook loop.
- engine fast: `fit` for one epoch of `steps` batches with the cell's train config (its augmentation too),
  on the fast path the train stage takes for this model on this CPU (`cifarbench.fastpaths.choose`:
  measured once per machine at the runs' thread count, then cached), then validation of the preset's
  `val_subset` images, whose time gives the evaluation rate.
- engine exact: the same with `fast=False` (fp32, contiguous): the engine's own overhead.
- plain bf16 (with --with-bf16): the plain loop under CPU bf16 autocast + channels_last, whatever the CPU.
Then per architecture: engine fast / plain fp32; the share of the CPU's peak fp32 FLOPs/s reached (forward
FLOPs per image as `cifarbench models` counts them, a train step ~3x forward; the peak's assumption is
printed); and the seconds one run of the preset costs = epochs x trained images / engine img/s + epochs x
val images / eval img/s + test images / eval img/s, CPU-seconds = that x threads. Not included: the
per-process overhead (imports, MLflow, data load, seconds per run) and the tune stage's trials.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime

import torch
import torch.nn.functional as F

from cifarbench import fastpaths
from cifarbench.data.splits import Split
from cifarbench.engine import EarlyStopConfig, OptimizerConfig, TrainConfig, fit, to_input
from cifarbench.engine.optim import OPTIMIZERS
from cifarbench.models import ModelConfig, build_model_from
from cifarbench.models.profile import count_parameters, flops_per_image, peak_flops, read_cpu_info
from cifarbench.params import Params, load
from cifarbench.plan import BASELINE, resolve_cell

TRAIN_FLOPS_PER_FORWARD = 3  # backward ~2x forward (gradients of inputs and of weights), so a step ~3x
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000  # images in the official training and test sets
VECTOR_FLAGS = ("sse2", "avx", "fma", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Workload:
    """One architecture's baseline cell, as the benchmark times it and as the preset runs it."""

    arch: str
    model: ModelConfig
    train: TrainConfig  # the cell's, cut to one epoch on the CPU without early stopping
    epochs: int  # of a run of the preset
    train_images: int  # trained per epoch (fit drops the last partial batch)
    val_images: int  # validated per epoch
    test_images: int  # scored once per run
    cpu_paths: tuple[str | None, bool] | None  # the engine's fast path: (autocast, channels_last); None = exact
    fast_path: str  # the same, in words, with what was measured


def workloads(params: Params, archs: list[str], threads: int) -> list[Workload]:
    plan = params.plan
    cells = [resolve_cell(plan, arch, BASELINE) for arch in archs]  # the recipe's lr/wd: speed ignores tuning
    fast = [c for c in cells if c.train.fast]
    # Exactly what the train stage asks (pipeline._measured_fast_paths), so the cache answers for the same key.
    chosen = fastpaths.choose({c.arch: (c.model.model_dump(exclude={"norm", "pooling", "dropout"}), c.train.batch_size)
                               for c in fast}, threads) if fast else {}
    out = []
    for cell in cells:
        budget, train = cell.budget, cell.train
        entry = chosen.get(cell.arch)
        paths = fastpaths.CANDIDATES[entry["choice"]] if entry else None
        words = f"{entry['choice']} (measured {fastpaths.describe(entry)})" if entry else "exact fp32 (train.fast off)"
        train_n = budget.train_subset or CIFAR10_TRAIN - params.data.val_size
        out.append(Workload(
            cell.arch, cell.model,
            train.model_copy(update={"epochs": 1, "early_stop": EarlyStopConfig(), "device": "cpu"}),
            train.epochs, train_n // min(train.batch_size, train_n) * min(train.batch_size, train_n),
            budget.val_subset or params.data.val_size, budget.test_subset or CIFAR10_TEST - budget.test_skip,
            paths, words,
        ))
    return out


def plain_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, opt: OptimizerConfig,
               bf16: bool = False) -> float:
    """Images/s of the textbook loop over the pre-normalized batches in x, y."""
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[opt.name]([{"params": list(model.parameters()), "weight_decay": opt.weight_decay}], opt)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(y), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x[i : i + batch])
        loss = F.cross_entropy(logits.float(), y[i : i + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(y) / (time.perf_counter() - start)


def engine(model: torch.nn.Module, train: Split, val: Split, cfg: TrainConfig,
           cpu_paths: tuple[str | None, bool] | None) -> tuple[float, float, dict]:
    """(train images/s, validation images/s, fast paths) of one `fit` epoch."""
    result = fit(model, train, val, cfg, seed=0, cpu_paths=cpu_paths)
    epoch = result.history[0]
    train_seconds = (len(train) // cfg.batch_size * cfg.batch_size) / epoch["images_per_s"]
    return epoch["images_per_s"], len(val) / max(epoch["seconds"] - train_seconds, 1e-9), result.fast_paths


def bench(work: Workload, steps: int, repeats: int, with_bf16: bool) -> tuple[dict[str, list[float]], dict]:
    """Images/s of every variant, `repeats` runs each ("eval" = the engine's validation rate), and the fast
    paths the engine's `fit` reported using."""
    batch = work.train.batch_size
    g = torch.Generator().manual_seed(0)
    n = steps * batch
    images = torch.randint(0, 256, (n + work.val_images, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n + work.val_images,), generator=g)
    train, val = Split(images[:n], labels[:n]), Split(images[n:], labels[n:])
    x = to_input(train.images)
    exact = work.train.model_copy(update={"fast": False})
    torch.manual_seed(0)
    model = build_model_from(work.model)
    variants = {
        "plain fp32": lambda m: plain_loop(m, x, train.labels, batch, work.train.optimizer),
        "engine fast": lambda m: engine(m, train, val, work.train, work.cpu_paths),
        "engine exact": lambda m: engine(m, train, Split(val.images[:10], val.labels[:10]), exact, None)[0],
    }
    if with_bf16:
        variants["plain bf16"] = lambda m: plain_loop(m, x, train.labels, batch, work.train.optimizer, bf16=True)
    rates: dict[str, list[float]] = {k: [] for k in [*variants, "eval"]}
    for r in range(repeats + 1):
        order = list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]
        for key in order:
            rate = variants[key](copy.deepcopy(model))
            if r == 0:  # round 0 warms oneDNN's kernel caches
                continue
            if key == "engine fast":
                rate, eval_rate, used = rate
                rates["eval"].append(eval_rate)
            rates[key].append(rate)
    return rates, used


def report(work: Workload, rates: dict[str, list[float]], used: dict, threads: int, peak: float, preset: str,
           steps: int, repeats: int) -> dict:
    """Print one architecture's block; returns its summary row."""
    model = build_model_from(work.model)
    forward = flops_per_image(model)
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    opt = work.train.optimizer
    print(f"\n{work.arch}: width {work.model.width:g}, stem stride {work.model.stem_stride}, "
          f"{count_parameters(model) / 1e6:.3f}M params, {forward / 1e6:,.2f} MFLOPs/img forward; batch "
          f"{work.train.batch_size}, {opt.name} lr {opt.lr:g} wd {opt.weight_decay:g}, augment "
          f"{work.train.augment.policy}; {steps} steps x {repeats} repeats")
    print(f"  engine fast path: {work.fast_path}; fit ran autocast={used['autocast']} "
          f"channels_last={used['channels_last']} on {used['device']}")
    for k, v in rates.items():
        label = "engine eval" if k == "eval" else k
        print(f"  {label:13s} median {med[k]:7,.0f} img/s  best {best[k]:7,.0f}  (runs: {', '.join(f'{x:.0f}' for x in v)})")
    ratio = med["engine fast"] / med["plain fp32"]
    print(f"  engine fast / plain fp32: median {ratio:.2f}x, best {best['engine fast'] / best['plain fp32']:.2f}x")
    print(f"  overhead engine exact vs plain fp32: median {100 * (1 - med['engine exact'] / med['plain fp32']):+.1f}%, "
          f"best {100 * (1 - best['engine exact'] / best['plain fp32']):+.1f}%")
    share = {k: 100 * med[k] * TRAIN_FLOPS_PER_FORWARD * forward / peak for k in ("engine fast", "plain fp32")}
    print(f"  share of peak fp32 FLOPs/s (train step {TRAIN_FLOPS_PER_FORWARD} x forward): engine fast "
          f"{share['engine fast']:.1f}%, plain fp32 {share['plain fp32']:.1f}%")
    train_s = work.epochs * work.train_images / med["engine fast"]
    eval_s = (work.epochs * work.val_images + work.test_images) / med["eval"]
    print(f"  one run of preset {preset}: {work.epochs} epochs x ({work.train_images:,} train / {med['engine fast']:,.0f} "
          f"img/s + {work.val_images:,} val / {med['eval']:,.0f} img/s) + {work.test_images:,} test = "
          f"{train_s:,.1f} + {eval_s:,.1f} s = {train_s + eval_s:,.1f} s x {threads} thread(s) = "
          f"{(train_s + eval_s) * threads:,.1f} CPU-s")
    return {"arch": work.arch, "fast path": work.fast_path.split(" ")[0], "batch": work.train.batch_size,
            "MFLOPs/img": f"{forward / 1e6:,.2f}", "plain img/s": f"{med['plain fp32']:,.0f}",
            "engine img/s": f"{med['engine fast']:,.0f}", "engine/plain": f"{ratio:.2f}x",
            "% peak engine": f"{share['engine fast']:.1f}", "% peak plain": f"{share['plain fp32']:.1f}",
            "CPU-s/run": f"{(train_s + eval_s) * threads:,.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="preset of params.yaml whose baseline cells to time")
    parser.add_argument("--archs", nargs="+", help="architectures (default: all of params.yaml)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=8, help="train steps per timed run")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--with-bf16", action="store_true", help="also time the plain loop under CPU bf16 autocast")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: a run's, executor.cpus_per_run capped at the cores)")
    args = parser.parse_args()
    params = load(args.params).with_preset(args.preset)
    archs = args.archs or list(params.architectures)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = args.threads or min(params.executor.cpus_per_run, cores)
    torch.set_num_threads(threads)

    cpu = read_cpu_info()
    peak, how = peak_flops(cpu.flags, cpu.mhz or 0.0, threads, cpu.vendor, cpu.family)
    print(f"{datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, {threads} thread(s), preset {args.preset} "
          f"({args.params}), baseline cells at the recipe's lr/wd")
    print(f"CPU: {cpu.model} ({cpu.vendor}, family {cpu.family}, {cores} core(s)), vector flags: "
          f"{' '.join(f for f in VECTOR_FLAGS if f in cpu.flags) or 'none'}")
    print(f"{how}\n  clock: {cpu.mhz_source}")
    print(f"FLOPs: forward per image counted by torch.utils.flop_counter (convolutions, matmuls), as `cifarbench "
          f"models`;\n  share = img/s x {TRAIN_FLOPS_PER_FORWARD} x forward / peak fp32 (a bf16 path can exceed "
          "what fp32 allows)")
    rows = []
    for work in workloads(params, archs, threads):
        rates, used = bench(work, args.steps, args.repeats, args.with_bf16)
        rows.append(report(work, rates, used, threads, peak, args.preset, args.steps, args.repeats))
    print(f"\nSummary (medians; preset {args.preset}, {threads} thread(s)):")
    print(" | ".join(rows[0]))
    print(" | ".join("---" for _ in rows[0]))
    for row in rows:
        print(" | ".join(str(v) for v in row.values()))


if __name__ == "__main__":
    main()
