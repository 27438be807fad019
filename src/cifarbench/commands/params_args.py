"""`--params` and `--preset`, the options of every command that reads the whole params.yaml, and `load(args)`:
the params read once, under the preset asked for."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.paths import PARAMS


def add_arguments(parser: argparse.ArgumentParser, preset: str | None = None) -> None:
    """--params FILE and --preset NAME (default `preset`, else params.yaml's own `preset:`)."""
    parser.add_argument("--params", type=Path, default=PARAMS, help="params file (default: %(default)s)")
    parser.add_argument("--preset", default=preset,
                        help=f"run this preset of the params file (default: {preset or 'its `preset:`'})")


def load(args: argparse.Namespace):
    """The Params of args.params under args.preset; an undefined preset is a ConfigError naming the valid ones."""
    from cifarbench.params import load as load_params

    params = load_params(args.params)
    return params.with_preset(args.preset) if args.preset else params
