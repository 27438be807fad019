"""Probes: a params.yaml that should be refused is refused by the first stage that reads the matrix (tune),
before any training.

Setup: the project's own params.yaml (smoke preset) with one value changed, written to a fresh project
folder. Fault: the bad value. Required outcome: `cifarbench tune` (`stages/tune.py`) exits with status 2, its message names
params.yaml, the dotted key and the fix, nothing is written under runs/, and params.yaml is unchanged.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from cifarbench.cli import main
from cifarbench.config import DataConfig, TrackingConfig, load_params, parse_section
from cifarbench.errors import ConfigError
from cifarbench.params import parse
from cifarbench.plan import all_cells
from cifarbench.tuning import TuneConfig
from small_params import small_params

pytestmark = pytest.mark.faults

PARAMS = small_params()  # the tests' own; the project's params.yaml is checked in test_the_real_params_yaml_still_plans


def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split("/")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def _rename(tree: dict, section: str, old: str, new: str) -> None:
    tree[section] = {new if k == old else k: v for k, v in tree[section].items()}


def run_tune(project: Path, monkeypatch, capsys, change) -> tuple[int, str]:
    tree = copy.deepcopy(PARAMS) | {"preset": "smoke"}
    change(tree)
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    before = params.read_bytes()
    monkeypatch.chdir(project)
    status = main(["tune"])
    assert params.read_bytes() == before  # the user's file is never rewritten
    assert not (project / "runs").exists()  # nothing half-planned is left behind
    return status, capsys.readouterr().err


CASES = {
    # name: (change, what the message must say)
    "string_lr": (lambda t: _set(t, "recipe/train/optimizer/lr", "0.001"),
                  [r"train\.optimizer\.lr", "without quotes", "'0.001'"]),
    "string_epochs": (lambda t: _set(t, "presets/smoke/train/epochs", "10"),
                      [r"train\.epochs", "without quotes", "'10'"]),
    "bool_as_number": (lambda t: _set(t, "recipe/train/optimizer/lr", True), [r"train\.optimizer\.lr", "true/false"]),
    "bool_as_epochs": (lambda t: _set(t, "presets/smoke/train/epochs", True), [r"train\.epochs", "true/false"]),
    "infinite_lr": (lambda t: _set(t, "recipe/train/optimizer/lr", float("inf")),
                    [r"train\.optimizer\.lr", r"finite", r"\.inf"]),
    "nan_weight_decay": (lambda t: _set(t, "recipe/train/optimizer/weight_decay", float("nan")),
                         [r"train\.optimizer\.weight_decay", "finite"]),
    "huge_epochs": (lambda t: _set(t, "presets/smoke/train/epochs", 10**12), [r"train\.epochs", "less than or equal to 10000"]),
    "float_epochs": (lambda t: _set(t, "presets/smoke/train/epochs", 1.0e12), [r"train\.epochs", "whole number"]),
    "huge_lr": (lambda t: _set(t, "recipe/train/optimizer/lr", 1.0e3), [r"train\.optimizer\.lr", "less than or equal to 10"]),
    "huge_width": (lambda t: _set(t, "ablations/dropout/model/width", 1.0e6), [r"model\.width", "less than or equal to 64"]),
    "negative_weight_decay": (lambda t: _set(t, "recipe/train/optimizer/weight_decay", -1.0),
                              [r"train\.optimizer\.weight_decay", "greater than or equal to 0"]),
    "negative_seed": (lambda t: _set(t, "presets/smoke/seeds", [-1]), [r"presets\.smoke\.seeds\.0", "greater than or equal to 0"]),
    "duplicate_seeds": (lambda t: _set(t, "presets/smoke/seeds", [0, 0]), [r"presets\.smoke\.seeds", "distinct"]),
    "huge_subset": (lambda t: _set(t, "presets/smoke/test_subset", 10**9), [r"presets\.smoke\.test_subset", "10000"]),
    "preset_name_with_space": (lambda t: (_rename(t, "presets", "smoke", "my smoke"), _set(t, "preset", "my smoke")),
                               [r"params\.yaml: preset: ", "letters, digits", "'my smoke'"]),
    "ablation_name_with_quote": (lambda t: _rename(t, "ablations", "no_l2", "no'l2"),
                                 [r"ablations\.no'l2", "letters, digits"]),
    "arch_name_with_slash": (lambda t: _rename(t, "architectures", "lenet5", "../lenet5"),
                               [r"architectures\.\.\./lenet5", "letters, digits"]),
    "unknown_top_level_key": (lambda t: t.update(trackng=t.pop("tracking")),
                              [r"params\.yaml: trackng: unknown top-level section", "valid: preset, data, tracking"]),
    "unavailable_device": (lambda t: _set(t, "recipe/train/device", "cuda:99"),
                           [r"train\.device: 'cuda:99' is not available", "set train.device to auto or cpu"]),
    "empty_architectures": (lambda t: _set(t, "architectures", {}), [r"params\.yaml: architectures: .*at least 1"]),
    "empty_ablations": (lambda t: _set(t, "ablations", {}), [r"params\.yaml: ablations: .*at least 1"]),
    "missing_seeds": (lambda t: _set(t, "presets/smoke/seeds", []), [r"presets\.smoke\.seeds: .*at least 1"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_refuses_bad_params(case, tmp_path, monkeypatch, capsys):
    change, expected = CASES[case]
    status, err = run_tune(tmp_path, monkeypatch, capsys, change)
    assert status == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for pattern in expected:
        assert re.search(pattern, err), (pattern, err)


def test_the_real_params_yaml_still_plans():
    real = load_params(Path(__file__).parents[2] / "params.yaml")
    for preset in real["presets"]:
        plan = parse(copy.deepcopy(real) | {"preset": preset}).plan
        runs = real["presets"][preset].get("architectures") or real["architectures"]  # the course preset runs three
        assert len(all_cells(plan)) == len(runs) * len(real["ablations"])


def test_data_command_refuses_a_quoted_val_size(tmp_path, monkeypatch, capsys):
    tree = copy.deepcopy(PARAMS)
    tree["data"]["val_size"] = "5000"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "--step", "prepare"]) == 2
    assert re.search(r"params\.yaml: data\.val_size: .*without quotes .*'5000'", capsys.readouterr().err)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("section, model, raw, key", [
    ("data", DataConfig, {"seed": -1}, r"data\.seed: .*greater than or equal to 0"),
    ("data", DataConfig, {"val_size": 50_000}, r"data\.val_size: .*less than or equal to 49990"),
    ("tune", TuneConfig, {"lr": {"adam": ["1e-4", 1e-2]}, "sampler_seed": 0}, r"tune\.lr\.adam\.0: .*without quotes"),
    ("tune", TuneConfig, {"lr": {"adam": [1e-4, float("inf")]}}, r"tune\.lr\.adam\.1: .*finite"),
    ("tracking", TrackingConfig, {"uri": 5}, r"tracking\.uri: .*valid string"),
])
def test_sections_refuse_bad_values(section, model, raw, key):
    with pytest.raises(ConfigError, match=key):
        parse_section(model, raw, section)
