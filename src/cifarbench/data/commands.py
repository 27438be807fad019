"""`cifarbench data`: the two data stages in one command, for use outside `dvc repro`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.config import DataConfig, read_section
from cifarbench.data.download import fetch_archive
from cifarbench.data.splits import prepare_splits
from cifarbench.errors import command_main
from cifarbench.paths import ARCHIVE, PARAMS, PREPARED


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=PARAMS, help="params file (default: %(default)s)")
    parser.add_argument("--step", choices=["download", "prepare", "all"], default="all")


def download(data: DataConfig) -> Path:
    return fetch_archive(data.url, data.md5, ARCHIVE)


def prepare(data: DataConfig) -> dict:
    info = prepare_splits(ARCHIVE, PREPARED, val_size=data.val_size, seed=data.seed)
    for split, counts in info["counts"].items():
        print(f"{split:>5}: {sum(counts):6d} images, per class {counts}")
    print(f"train mean {info['train_mean']} std {info['train_std']}")
    return info


def run(args: argparse.Namespace) -> None:
    data = read_section(args.params, DataConfig, "data")
    if args.step in ("download", "all"):
        download(data)
    if args.step in ("prepare", "all"):
        prepare(data)


def download_main(argv: list[str] | None = None) -> int:
    """The DVC stage `download` (stages/download.py)."""
    return command_main("stages/download.py", "fetch and verify the archive", configure, run,
                        ["--step", "download", *(argv or [])])


def prepare_main(argv: list[str] | None = None) -> int:
    """The DVC stage `prepare` (stages/prepare.py)."""
    return command_main("stages/prepare.py", "write the seeded splits", configure, run,
                        ["--step", "prepare", *(argv or [])])
