"""Reading `params.yaml` once, at the edge, into typed and frozen config objects.

Every section is a strict pydantic model with `extra="forbid"`: an unknown key or a wrong type is a
`ConfigError` whose message names the dotted key (`data.val_size`) and what was expected. Strict means
no coercion: a quoted number ("1e-3"), a bool where a number goes, a float where an int goes and inf/NaN
are all refused (an int is accepted for a float: YAML writes `lr: 1` that way).
Functions further in receive only the section object they use. The root model of the whole file, which
puts every section together, is cifarbench.params.Params (it imports the sections' owners, which import
this module).
"""

from __future__ import annotations

import re

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError

from cifarbench.errors import ConfigError
from cifarbench.paths import PARAMS

PARAMS_FILE = PARAMS

# The official archive (https://www.cs.toronto.edu/~kriz/cifar.html) and its published md5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


# The sections params.yaml may have; anything else at the top level is a typo (`trackng:`) that would
# otherwise be ignored silently.
TOP_LEVEL_KEYS = ("preset", "data", "tracking", "recipe", "architectures", "ablations", "tune", "presets",
                  "nightly", "executor")

# Preset, architecture and ablation names become folder names, DVC stage names and MLflow filter strings
# (`tags.preset = '<name>'`): no spaces, quotes or slashes, and no leading dot or dash.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

# YAML has no tuples: fixed-length pairs (betas, ranges) arrive as lists. Only the container is lax; its
# items stay strict.
ListAsTuple = Strict(False)

MAX_SEED = 2**32 - 1  # numpy and scikit-learn refuse larger seeds (random_state must fit in uint32)


class Section(BaseModel):
    """Base for every params.yaml section: frozen, unknown keys rejected, strict types, finite floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataConfig(Section):
    url: str = Field(CIFAR10_URL, description="https/http/file URL or a local path of cifar-10-python.tar.gz")
    md5: str = Field(CIFAR10_MD5, pattern=r"^[0-9a-fA-F]{32}$", description="md5 of the archive at `url`")
    # At most 49,990: leaves at least 10 training images, the smallest train_subset.
    val_size: int = Field(5000, ge=10, le=49_990, description="images held out of the 50,000 training images for validation")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the stratified validation split")


class TrackingConfig(Section):
    experiment: str = Field("cifarbench", min_length=1, description="MLflow experiment holding the pipeline's runs")
    # A local SQLite store in the repo (git-ignored); the MLFLOW_TRACKING_URI environment variable overrides it.
    uri: str = Field("sqlite:///mlflow.db", min_length=1)


T = TypeVar("T", bound=BaseModel)


# Bounds on what params.yaml may be: the real file is ~20 KB and nests ~6 levels deep. Past them it is not a
# params file (a generated or pasted blob), and PyYAML's recursive composer would end in a RecursionError.
MAX_PARAMS_BYTES = 1 << 20
MAX_NESTING = 64
SHOWN_CHARS = 200  # a value quoted in an error message is cut to this length


class ParamsRefused(yaml.YAMLError):
    """params.yaml holds something ParamsLoader refuses (a duplicate key, an alias, too deep a nesting); the
    message names the line and the fix."""


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 (and DVC's ruamel) does: `dvc exp run -S lr=1e-6` writes
    `1e-06`, which YAML 1.1 would read as the string '1e-06'. Stricter than YAML: a duplicate key is refused
    (YAML keeps the last silently; DVC refuses the file), and so are anchors and aliases (`&a`, `*a`: one
    alias bomb expands to gigabytes; params.yaml has none and `dvc exp run -S` writes them out anyway), and
    nesting deeper than MAX_NESTING."""

    nesting = 0  # nodes open around the one being composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ParamsRefused(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                                "allowed in params.yaml: write the value out where it is used")
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise ParamsRefused(f"line {event.start_mark.line + 1}: nested more than {MAX_NESTING} levels deep; "
                                    "params.yaml holds sections of settings, a few levels deep")
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: {...}` merges; the explicit keys override it
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base class refuses it with its own message
                continue
            if seen is not None:
                raise ParamsRefused(f"line {line}: duplicate key {shorten(repr(key))} (first at line {seen}); YAML would "
                                    "keep only the last one silently, and DVC refuses the file: remove one of them")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was: an error message stays readable whatever
    value it quotes."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def read_yaml(text: str) -> Any:
    """YAML text as params.yaml is read (ParamsLoader)."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def read_params_text(path: Path) -> str:
    """The file's text: UTF-8 (as YAML and DVC read it), at most MAX_PARAMS_BYTES."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the project root or pass --params PATH") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a params file: pass --params PATH of a params.yaml") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise ConfigError(f"{path} is {len(data):,} bytes, more than a params file holds ({MAX_PARAMS_BYTES:,} at "
                          "most): check that --params names the project's params.yaml")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}, line {line}: "
                          f"{data[exc.start:exc.start + 4]!r}): save it as UTF-8 and run again") from None


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """The raw params tree (cifarbench.params.load validates it whole). A missing, non-UTF-8 or oversized file,
    invalid YAML, or YAML that ParamsLoader refuses is a ConfigError."""
    path = Path(path)
    text = read_params_text(path)
    try:
        tree = read_yaml(text)
    except ParamsRefused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {shorten(str(exc), 1000)}") from None
    except RecursionError:  # a bound above missed a way to nest
        raise ConfigError(f"{path}: nested too deeply; params.yaml holds sections of settings, a few levels deep") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data:, train:, ...), got {type(tree).__name__}")
    check_top_level(tree)
    return tree


def read_section(path: Path | str, model: type[T], key: str) -> T:
    """One section of the params file, for a command that needs no other (the data stages)."""
    return parse_section(model, load_params(path).get(key), key)


def check_top_level(tree: dict[str, Any]) -> None:
    """Refuse a top-level key outside TOP_LEVEL_KEYS, naming it and the valid ones."""
    unknown = [str(k) for k in tree if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError("\n".join(
            f"params.yaml: {shorten(key)}: unknown top-level section; remove it or check its spelling "
            f"(valid: {', '.join(TOP_LEVEL_KEYS)})" for key in unknown))


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
            where = ".".join([*([key] if key else []), *(str(p) for p in err["loc"] if p != "[key]")])
            problems.append(shorten(f"params.yaml: {shorten(where)}: {describe(err)}", 5 * SHOWN_CHARS))
        raise ConfigError("\n".join(problems)) from None


def describe(err: dict) -> str:
    """One pydantic error as `what (got ...)`, with the fix for the mistakes YAML makes easy."""
    if err["type"] == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    got, msg = err["input"], err["msg"]
    if err["type"] == "value_error":  # our validators' messages already quote the value
        return msg.removeprefix("Value error, ")
    if err["type"] in ("int_type", "float_type", "bool_type"):
        if isinstance(got, str):
            msg += "; write it without quotes"
        elif isinstance(got, bool):
            msg += ", not true/false"
        elif err["type"] == "int_type" and isinstance(got, float):
            msg += "; write a whole number without a decimal point"
    elif err["type"] == "finite_number":
        msg += ", not .inf or .nan"
    elif err["type"] == "string_pattern_mismatch" and err["ctx"].get("pattern") == NAME_PATTERN:
        msg = "names may hold only letters, digits, '_', '.' and '-' (they become paths and DVC stage names)"
    return f"{msg} (got {shorten(repr(got))})"
