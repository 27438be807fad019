"""params.yaml as one typed, frozen object, read once at the edge: `load(path) -> Params`.

Each section's model lives with the code that uses it (DataConfig and TrackingConfig in config.py,
ExecutorConfig in execute, TuneConfig in tuning, NightlyConfig in nightly.config, the plan's sections in
plan.py); this module only puts them together, so it sits above all of them in the layer stack and only
the command entry points import it. A stage is then handed the sections it uses (`params.plan`,
`params.tracking`, ...), never the raw tree.

Unknown keys are refused at every level and every error names the dotted key (config.parse_section). The
data stages read only `data:` (config.read_section): they depend on neither the training code nor its
params, so neither reruns them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from cifarbench.config import DataConfig, Name, Section, TrackingConfig, check_top_level, load_params, parse_section
from cifarbench.errors import ConfigError
from cifarbench.execute import ExecutorConfig
from cifarbench.nightly.config import NightlyConfig
from cifarbench.paths import PARAMS
from cifarbench.plan import AblationSpec, ArchitectureSpec, Budget, PlanConfig, Recipe, check_plan
from cifarbench.tuning import TuneConfig


class Params(Section):
    """The whole params.yaml; one field per top-level section (config.TOP_LEVEL_KEYS)."""

    preset: Name
    data: DataConfig = DataConfig()
    tracking: TrackingConfig = TrackingConfig()
    executor: ExecutorConfig = ExecutorConfig()
    recipe: Recipe
    architectures: dict[Name, ArchitectureSpec] = Field(min_length=1)
    ablations: dict[Name, AblationSpec] = Field(min_length=1)
    tune: TuneConfig
    presets: dict[Name, Budget]
    nightly: NightlyConfig = NightlyConfig()

    @property
    def plan(self) -> PlanConfig:
        """The sections that decide the matrix (checked when the Params were parsed); `architectures` only
        those the preset runs (`presets.<preset>.architectures`, all when absent)."""
        sections = {k: getattr(self, k) for k in PlanConfig.model_fields}
        budget = self.presets.get(self.preset)  # an undefined preset: check_plan names the defined ones
        if budget is not None and (runs := budget.architectures) is not None:
            sections["architectures"] = {a: spec for a, spec in self.architectures.items() if a in runs}
        return PlanConfig.model_construct(**sections)

    def with_preset(self, preset: str) -> Params:
        """The same params under another preset; an undefined one is a ConfigError naming the valid ones."""
        params = self.model_copy(update={"preset": preset})
        check_architectures(params)
        check_plan(params.plan)
        return params


def parse(tree: dict[str, Any]) -> Params:
    """Validate a params tree (what params.yaml holds) as Params; a ConfigError names the dotted key."""
    check_top_level(tree)
    sections = {k: {} if v is None and k != "preset" else v for k, v in tree.items()}  # `data:` with nothing under it
    params = parse_section(Params, sections, "")
    check_architectures(params)
    check_plan(params.plan)
    return params


def check_architectures(params: Params) -> None:
    """The active preset's `architectures` list names architectures params.yaml defines. Only the preset that
    runs: a user trimming `architectures` need not edit the other presets' lists (as for `ablations`)."""
    budget = params.presets.get(params.preset)
    if budget is not None and (unknown := [a for a in budget.architectures or [] if a not in params.architectures]):
        raise ConfigError(f"params.yaml: presets.{params.preset}.architectures: {', '.join(unknown)} not in "
                          f"`architectures`: {', '.join(params.architectures)}")


def load(path: Path | str = PARAMS) -> Params:
    """Read and validate params.yaml, once."""
    return parse(load_params(path))
