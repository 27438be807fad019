"""`cifarbench data` and the DVC stages `download` and `prepare` (stages/download.py, stages/prepare.py).
They read only params.yaml `data:` (config.read_section), never the whole params: the data stages depend
on neither the training code nor its params, so neither reruns them."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.errors import command_main
from cifarbench.paths import ARCHIVE, PARAMS, PREPARED

DESCRIPTION = "download, verify and split CIFAR-10 as params.yaml `data` says"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=PARAMS, help="params file (default: %(default)s)")
    parser.add_argument("--step", choices=["download", "prepare", "all"], default="all")


def run(args: argparse.Namespace) -> None:
    from cifarbench.config import DataConfig, read_section

    data = read_section(args.params, DataConfig, "data")
    if args.step in ("download", "all"):
        from cifarbench.data.download import fetch_archive

        fetch_archive(data.url, data.md5, ARCHIVE)
    if args.step in ("prepare", "all"):
        from cifarbench.data.splits import prepare_splits

        info = prepare_splits(ARCHIVE, PREPARED, val_size=data.val_size, seed=data.seed)
        for split, counts in info["counts"].items():
            print(f"{split:>5}: {sum(counts):6d} images, per class {counts}")
        print(f"train mean {info['train_mean']} std {info['train_std']}")


def download_main(argv: list[str] | None = None) -> int:
    """The DVC stage `download` (stages/download.py)."""
    return command_main("stages/download.py", "fetch and verify the archive", configure, run,
                        ["--step", "download", *(argv or [])])


def prepare_main(argv: list[str] | None = None) -> int:
    """The DVC stage `prepare` (stages/prepare.py)."""
    return command_main("stages/prepare.py", "write the seeded splits", configure, run,
                        ["--step", "prepare", *(argv or [])])
