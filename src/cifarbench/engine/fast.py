"""Fast paths, chosen from what the device supports and recorded with every run.

- autocast: bf16 on CUDA when supported (else fp16 with a GradScaler).
- channels_last (the model's parameters) on CUDA: cuDNN runs NHWC natively. The NCHW input is taken as is
  (see `augment`).
- on a CPU, bf16 autocast and channels_last are what cifarbench.fastpaths decides: measured for the
  model on this CPU (`cpu`), or its rule for unmeasured runs (bf16 only with bf16 instructions, no
  channels_last).
- data held as tensors on the device (on CUDA the whole split lives in GPU memory).
- torch.compile only when asked (`compile: true`): its first epoch pays the compilation.

`fast=False` turns autocast and channels_last off, for exact fp32 comparisons.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from cifarbench import fastpaths
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


def choose(device: torch.device, *, fast: bool, compile: bool,
           cpu: tuple[str | None, bool] | None = None) -> FastPaths:
    """The fast paths of a run. `cpu`: (autocast dtype or None, channels_last) measured on this CPU for this
    model (cifarbench.fastpaths); without it a CPU run takes fastpaths' rule for unmeasured runs."""
    if not fast:
        autocast, channels_last = None, False
    elif device.type == "cuda":
        autocast, channels_last = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16"), True
    elif device.type == "cpu":
        autocast, channels_last = cpu if cpu is not None else fastpaths.unmeasured()
    else:  # mps: fp32, contiguous
        autocast, channels_last = None, False
    return FastPaths(device=str(device), autocast=autocast, channels_last=channels_last, compiled=compile)
