"""`cifarbench models`: the zoo as a table of parameters and forward FLOPs; `--bench` adds images/s."""

from __future__ import annotations

import argparse

from cifarbench.errors import ConfigError

DESCRIPTION = "list the architectures: parameters, FLOPs; --bench measures images/s"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", help="comma-separated models (default: all); see the table for names")
    parser.add_argument(
        "--width", default="1",
        help="channel multiplier: one number, or NAME=W,NAME=W (unlisted models get 1); default %(default)s",
    )  # fmt: skip
    parser.add_argument("--bench", action="store_true", help="measure train and inference images/s (slow)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch of the --bench steps (default %(default)s)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="--bench: timing budget per cell after one warmup step"
    )  # fmt: skip
    parser.add_argument("--channels-last", action="store_true", help="--bench: channels_last memory format")
    parser.add_argument(
        "--bf16", choices=["auto", "on", "off"], default="auto",
        help="--bench under bf16 autocast too: auto = only where the CPU has bf16 instructions (emulated bf16 "
        "is 3-25x slower than fp32)",
    )  # fmt: skip


def parse_widths(text: str) -> dict[str, float]:
    """'0.25' -> {'*': 0.25}; 'lenet5=2,vgg16=0.25' -> {'lenet5': 2.0, 'vgg16': 0.25, '*': 1.0}."""
    try:
        if "=" not in text:
            return {"*": float(text)}
        pairs = (item.split("=") for item in text.split(","))
        return {"*": 1.0, **{name.strip(): float(w) for name, w in pairs}}
    except ValueError:
        raise ConfigError(f"--width must be a number or NAME=W,NAME=W pairs, got {text!r}") from None


def table_row(name: str, width: float, cells: list[tuple[bool, str]], args: argparse.Namespace) -> list[str]:
    from cifarbench.models import build_model, model_info
    from cifarbench.models.profile import count_parameters, flops_per_image, throughput

    model = build_model(name, width=width)
    params, mflops = count_parameters(model), flops_per_image(model) / 1e6
    row = [name, model_info(name).family, f"{width:g}", f"{params:,}", f"{mflops:,.1f}"]
    for train, dtype in cells:
        rate = throughput(
            model, batch_size=args.batch_size, train=train, dtype=dtype,
            channels_last=args.channels_last, max_seconds=args.seconds,
        )  # fmt: skip
        row.append(f"{rate:,.0f}")
    return row


def run(args: argparse.Namespace) -> None:
    from cifarbench.fastpaths import native_bf16
    from cifarbench.models import list_models, model_info

    names = [n.strip() for n in args.names.split(",")] if args.names else list_models()
    for name in names:
        model_info(name)  # an unknown name fails before any work, listing the valid ones
    widths = parse_widths(args.width)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16())
    dtypes = ["fp32", "bf16"] if bf16 else ["fp32"]
    cells = [(train, dtype) for train in (True, False) for dtype in dtypes] if args.bench else []
    header = ["name", "family", "width", "params", "MFLOPs/img"]
    header += [f"{'train' if train else 'infer'} {dtype}" for train, dtype in cells]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name in names:
        print(" | ".join(table_row(name, widths.get(name, widths["*"]), cells, args)), flush=True)
    print(
        "\nMFLOPs/img: forward FLOPs of one 3x32x32 image, counted by torch.utils.flop_counter "
        "(convolutions and matrix multiplies; one multiply-add = 2 FLOPs)."
    )
    if args.bench:
        native = "native" if native_bf16() else "emulated: this CPU has no bf16 instructions"
        print(
            f"train/infer: images/s at batch {args.batch_size} (train = forward, backward, SGD step); median of "
            f"single steps after one warmup. bf16 = torch.autocast(cpu, bfloat16), {native}"
            + ("." if bf16 else "; not measured (--bf16 on to measure).")
        )
