"""Why conv weights start with He init: the signal and gradient each default model starts with, without
batch norm (the no_bn cells), under PyTorch's default conv init and under He et al. 2015's (fan_in, ReLU).

No training and no data: 64 standard-normal 32x32 images, the default preset's widths, seed 0.

    python docs/calibration/init.py
"""

from __future__ import annotations

import torch

from cifarbench.models import build_model

MODELS = {"lenet5": dict(width=2.0), "alexnet": dict(width=0.25), "vgg11": dict(width=0.125),
          "resnet18": dict(width=0.125, stem_stride=2), "googlenet": dict(width=0.0625, stem_stride=2),
          "densenet121": dict(width=0.0625, stem_stride=2)}


def probe(name: str, init: str) -> tuple[float, float, float, float]:
    """(std of the first and last conv's output, std of the first and last conv's weight gradient)."""
    torch.manual_seed(0)
    model = build_model(name, norm="none", init=init, **MODELS[name])
    outputs: list[float] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, o: outputs.append(o.std().item()))
    model(torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))).logsumexp(1).mean().backward()
    grads = [p.grad.std().item() for p in model.parameters() if p.dim() == 4]
    return outputs[0], outputs[-1], grads[0], grads[-1]


if __name__ == "__main__":
    print("| model (no norm) | init | first conv out sd | last conv out sd | first conv grad sd | last conv grad sd |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in MODELS:
        for init in ("torch", "he"):
            print(f"| {name} | {init} | " + " | ".join(f"{v:.2g}" for v in probe(name, init)) + " |")
