"""Reading `params.yaml` once, at the edge, into typed and frozen config objects.

Every section is a pydantic model with `extra="forbid"`: an unknown key or a wrong type is a
`ConfigError` whose message names the dotted key (`data.val_size`) and what was expected.
Functions further in receive only the section object they use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cifarbench.errors import ConfigError

PARAMS_FILE = Path("params.yaml")

# The official archive (https://www.cs.toronto.edu/~kriz/cifar.html) and its published md5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


class Section(BaseModel):
    """Base for every params.yaml section: frozen, unknown keys rejected, no silent coercion of strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DataConfig(Section):
    url: str = Field(CIFAR10_URL, description="https/http/file URL or a local path of cifar-10-python.tar.gz")
    md5: str = Field(CIFAR10_MD5, pattern=r"^[0-9a-fA-F]{32}$", description="md5 of the archive at `url`")
    val_size: int = Field(5000, ge=10, description="images held out of the 50,000 training images for validation")
    seed: int = Field(0, description="seed of the stratified validation split")


class TrackingConfig(Section):
    experiment: str = Field("cifarbench", min_length=1, description="MLflow experiment holding the pipeline's runs")
    # A local SQLite store in the repo (git-ignored); the MLFLOW_TRACKING_URI environment variable overrides it.
    uri: str = Field("sqlite:///mlflow.db", min_length=1)


T = TypeVar("T", bound=BaseModel)


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """The raw params tree. A missing file or invalid YAML is a ConfigError."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the project root or pass --params PATH") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data:, train:, ...), got {type(tree).__name__}")
    return tree


def parse_section(model: type[T], raw: Any, key: str) -> T:
    """Validate `raw` (the value of top-level `key`, or the whole file for key "") as `model`, naming the
    offending dotted key on error."""
    if raw is None:
        raw = {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join([*([key] if key else []), *(str(p) for p in err["loc"])])
            got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else ""
            what = "unknown key; remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"params.yaml: {where}: {what}{got}")
        raise ConfigError("\n".join(problems)) from None
