"""Size and speed of a model: parameters, forward FLOPs per image, training/inference images per second;
and the CPU's peak fp32 FLOPs/s, to say how much of it a training step uses."""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str  # vendor_id: GenuineIntel, AuthenticAMD, ...
    family: int | None  # cpu family: AMD 25 = Zen 3/4, 26 = Zen 5
    flags: frozenset[str]
    mhz: float | None
    mhz_source: str  # where `mhz` came from: the maximum clock, or the current one the kernel reports


def read_cpu_info(cpuinfo: Path = Path("/proc/cpuinfo"),
                  max_freq: Path = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")) -> CpuInfo:
    """The first CPU of /proc/cpuinfo; clock = cpufreq's maximum (what lscpu shows as max MHz) where the
    kernel has one, else the highest `cpu MHz` line (a virtual machine's nominal clock, not its boost)."""
    fields: dict[str, str] = {}
    mhz_lines = []
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "cpu MHz":
            mhz_lines.append(float(value))
        fields.setdefault(key, value)
    try:
        mhz, source = int(max_freq.read_text()) / 1000, f"max clock ({max_freq})"
    except (OSError, ValueError):
        mhz, source = (max(mhz_lines), "`cpu MHz` of /proc/cpuinfo (current, not boost)") if mhz_lines else (None, "unknown")
    family = fields.get("cpu family", "")
    return CpuInfo(fields.get("model name", "unknown"), fields.get("vendor_id", "unknown"),
                   int(family) if family.isdigit() else None, frozenset(fields.get("flags", "").split()), mhz, source)


def fp32_flops_per_cycle(flags: frozenset[str] | set[str], vendor: str = "", family: int | None = None) -> tuple[int, str]:
    """Peak fp32 FLOPs per cycle of one core (FMA units x fp32 lanes x 2 FLOPs per multiply-add), from its
    widest vector instructions, with the assumption that number rests on (flags do not say how many units)."""
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:
            return 32, ("AMD Zen 4 (family 25 with AVX-512): 2 x 256-bit FMA pipes, a 512-bit FMA takes both: "
                        "2 FMA x 8 fp32 lanes x 2")
        return 64, ("AVX-512: assumes 2 x 512-bit FMA units (Xeon Gold 6xxx/Platinum, Zen 5) = 2 x 16 fp32 lanes "
                    "x 2; one-unit Xeons (Silver, Gold 5xxx) reach half, so the share is then a lower bound")
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2+FMA: assumes 2 x 256-bit FMA units (Haswell+, Zen 2+) = 2 x 8 fp32 lanes x 2; Zen 1 has half"
    if "avx" in flags:
        return 16, "AVX without FMA: one 256-bit add + one 256-bit multiply per cycle = 8 fp32 lanes x 2"
    return 8, "SSE: one 128-bit add + one 128-bit multiply per cycle = 4 fp32 lanes x 2"


def peak_flops(flags: frozenset[str] | set[str], mhz: float, cores: int, vendor: str = "",
               family: int | None = None) -> tuple[float, str]:
    """(peak fp32 FLOPs/s of `cores` cores at `mhz`, two lines saying how it was computed and assumed)."""
    per_cycle, why = fp32_flops_per_cycle(flags, vendor, family)
    peak = cores * mhz * 1e6 * per_cycle
    return peak, (f"peak fp32 {peak / 1e9:,.0f} GFLOP/s = {cores} core(s) x {mhz:,.0f} MHz x {per_cycle} FLOPs/cycle\n"
                  f"  assumption: {why}")
