"""CPU fast paths chosen by measurement: timed in a subprocess, cached per machine and model, the fastest
candidate only when it beats fp32 by MIN_GAIN, and a run that trains under the choice records it; a run
nothing was measured for follows fastpaths' own rule, which `cifarbench models --bench` shares."""

from __future__ import annotations

import json

import pytest

from cifarbench import fastpaths
from cifarbench.engine.fast import choose
import torch


def test_a_measured_choice_is_cached_per_machine_and_model(tmp_path):
    cache = tmp_path / "fast-paths.json"
    models = {"lenet5": ({"name": "lenet5", "width": 0.5}, 32)}
    first = fastpaths.choose(models, threads=1, cache=cache)["lenet5"]
    assert set(first["measured"]) == set(fastpaths.CANDIDATES)
    assert first["measured"]["fp32"] > 0 and first["choice"] in fastpaths.CANDIDATES
    stored = json.loads(cache.read_text())
    assert stored["format"] == fastpaths.CACHE_FORMAT and len(stored["entries"]) == 1
    next(iter(stored["entries"].values()))["choice"] = "bf16"  # a cached entry is used as is: no second measurement
    cache.write_text(json.dumps(stored))
    assert fastpaths.choose(models, threads=1, cache=cache)["lenet5"]["choice"] == "bf16"
    fastpaths.choose({**models, "wider": ({"name": "lenet5", "width": 1.0}, 32)}, threads=1, cache=cache)
    assert len(json.loads(cache.read_text())["entries"]) == 2  # another model is measured and added


@pytest.mark.parametrize("measured, chosen", [
    ({"fp32": 100.0, "bf16": 104.0, "bf16+channels_last": 90.0}, "fp32"),   # 4%: not worth inexact numbers
    ({"fp32": 100.0, "bf16": 86.0, "bf16+channels_last": 154.0}, "bf16+channels_last"),
    ({"fp32": 100.0, "bf16": 130.0, "bf16+channels_last": None}, "bf16"),  # channels_last hung: never chosen
    ({"fp32": None, "bf16": None, "bf16+channels_last": None}, "fp32"),
])
def test_the_fastest_candidate_wins_only_by_a_margin(measured, chosen):
    assert fastpaths._best(measured) == chosen


def test_the_measured_choice_replaces_the_rule_on_a_cpu_only():
    cpu = torch.device("cpu")
    assert choose(cpu, fast=True, compile=False, cpu=("bfloat16", True)).channels_last is True
    assert choose(cpu, fast=True, compile=False, cpu=(None, False)).autocast is None
    exact = choose(cpu, fast=False, compile=False, cpu=("bfloat16", True))  # fast: false stays exact fp32
    assert exact.autocast is None and exact.channels_last is False


@pytest.mark.parametrize("native", [True, False])
def test_an_unmeasured_cpu_run_follows_fastpaths_rule(native, monkeypatch):
    monkeypatch.setattr(fastpaths, "native_bf16", lambda: native)
    paths = choose(torch.device("cpu"), fast=True, compile=False)
    assert (paths.autocast, paths.channels_last) == fastpaths.unmeasured() == ("bfloat16" if native else None, False)
