"""Fast paths, chosen from what the device supports and recorded with every run.

- autocast: bf16 on CUDA when supported (else fp16 with a GradScaler); bf16 on a CPU only with native
  bf16 instructions (AVX512-BF16 or AMX) — without them oneDNN emulates bf16 and a step is ~2.5x *slower*
  (measured on an AVX2-only EPYC, 64-channel 3x3 conv, batch 128).
- channels_last (the model's parameters), on CUDA only: cuDNN runs NHWC natively. On the CPU it is off:
  it was 2.2x faster on that same 64-channel conv, but oneDNN's AVX2 NHWC kernels hung (1x1 conv
  backward-weights, ResNet-18 at width 0.0625, 1 thread) and crashed at exit (width 0.125) on this
  project's 2-core machines; a benchmark that never finishes measures nothing. The NCHW input is taken
  as is (see `augment`).
- data held as tensors on the device (on CUDA the whole split lives in GPU memory).
- torch.compile only when asked (`compile: true`): its first epoch pays the compilation.

`fast=False` turns autocast and channels_last off, for exact fp32 comparisons.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from cifarbench.errors import ConfigError


@dataclass(frozen=True)
class FastPaths:
    device: str
    autocast: str | None  # "bfloat16", "float16" or None (fp32)
    channels_last: bool
    compiled: bool
    torch: str = str(torch.__version__)

    @property
    def dtype(self) -> torch.dtype | None:
        return getattr(torch, self.autocast) if self.autocast else None

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.dtype)

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str = "auto") -> torch.device:
    if name != "auto":
        check_device(name)
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str) -> None:
    """Refuse a device this machine lacks (`cuda:99`, `mps` off a Mac) before any training starts.

    Called by the tune and train stages, not by config validation: a report built on a laptop still reads a GPU run's
    config."""
    if name == "auto":
        return
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            valid = f"cuda:0 .. cuda:{count - 1}" if count else "none here"
            raise ConfigError(f"params.yaml: train.device: {name!r} is not available: this machine has {count} CUDA "
                              f"device(s) ({valid}); set train.device to auto or cpu")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"params.yaml: train.device: {name!r} is not available on this machine; set it to auto or cpu")


def cpu_has_native_bf16() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def autocast_dtype(device: torch.device) -> str | None:
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return None


def choose(device: torch.device, *, fast: bool, compile: bool,
           cpu: tuple[str | None, bool] | None = None) -> FastPaths:
    """The fast paths of a run. `cpu`: (autocast dtype or None, channels_last) measured on this CPU for this
    model (cifarbench.fastpaths), which then replaces the flag-based rule on a CPU."""
    measured = cpu is not None and device.type == "cpu" and fast
    return FastPaths(
        device=str(device),
        autocast=(cpu[0] if measured else autocast_dtype(device)) if fast else None,
        channels_last=(cpu[1] if measured else device.type == "cuda") and fast,
        compiled=compile,
    )
