"""The unit tests' own params tree (tests/params_small.yaml), so that retuning params.yaml breaks none of them."""

from __future__ import annotations

from pathlib import Path

import yaml

PATH = Path(__file__).with_name("params_small.yaml")


def small_params(**changes) -> dict:
    """A fresh tree of params_small.yaml with dotted changes set, `presets__smoke__seeds=[0]` style."""
    tree = yaml.safe_load(PATH.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return tree
