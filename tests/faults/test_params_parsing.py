"""Probes: a params.yaml that YAML would read, or fail to read, in a way that hides the problem is refused by
`load_params` with a ConfigError naming the file, the line and the fix: never a traceback, never a silent
choice, never a message the size of the value, and the file is left as it was.

Setup: the tests' small params tree written as YAML to a temp params.yaml, then damaged as each case says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cifarbench.config import MAX_NESTING, SHOWN_CHARS, TrackingConfig, load_params, parse_section
from cifarbench.errors import ConfigError
from small_params import small_params

pytestmark = pytest.mark.faults


def refused(path: Path) -> str:
    """load_params' message for `path`, checking the file is byte-identical afterwards."""
    before = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert path.read_bytes() == before
    return str(caught.value)


def written(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_the_small_params_still_load(tmp_path):
    assert load_params(written(tmp_path, yaml.safe_dump(small_params()))) == small_params()


def test_a_duplicate_key_is_refused_naming_both_lines(tmp_path):
    text = yaml.safe_dump(small_params(), sort_keys=False)
    path = written(tmp_path, text + "data:\n  seed: 3\n")  # the second `data:`, after the whole file
    message = refused(path)
    line = text.count("\n") + 1
    first = text.splitlines().index("data:") + 1
    assert message.startswith(f"{path}: line {line}: duplicate key 'data' (first at line {first})")
    assert "remove one of them" in message


def test_a_duplicate_key_nested_in_a_section_is_refused(tmp_path):
    message = refused(written(tmp_path, "data:\n  seed: 1\n  val_size: 100\n  seed: 2\n"))
    assert "line 4: duplicate key 'seed' (first at line 2)" in message


def test_a_file_that_is_not_utf8_is_refused_naming_the_byte_and_the_fix(tmp_path):
    path = written(tmp_path, "data:\n  seed: 1\n# caf\xe9\n".encode("latin-1"))
    message = refused(path)
    assert message == f"{path} is not UTF-8 text (byte 21, line 3: b'\\xe9\\n'): save it as UTF-8 and run again"


def test_ten_thousand_nested_lists_are_refused_not_a_recursion_error(tmp_path):
    message = refused(written(tmp_path, "data: " + "[" * 10_000 + "]" * 10_000 + "\n"))
    assert f"nested more than {MAX_NESTING} levels deep" in message and len(message) < 300


def test_an_alias_bomb_is_refused_at_its_first_anchor(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    message = refused(written(tmp_path, "\n".join(lines) + "\n"))
    assert message == (f"{tmp_path / 'params.yaml'}: line 1: YAML anchors and aliases (&name, *name) are not allowed "
                       "in params.yaml: write the value out where it is used")


def test_a_huge_file_is_refused_by_its_size(tmp_path):
    message = refused(written(tmp_path, "data:\n  seed: 1\n" + "#" * (2 << 20) + "\n"))
    assert "bytes, more than a params file holds" in message and len(message) < 300


def test_a_huge_bad_value_is_cut_short_in_the_message(tmp_path):
    """A list of a million items where a string goes: the message quotes the start of it, not all of it."""
    message = str(pytest.raises(ConfigError, parse_section, TrackingConfig, {"uri": list(range(1_000_000))},
                                "tracking").value)
    assert message.startswith("params.yaml: tracking.uri: Input should be a valid string (got [0, 1, 2, ")
    assert "characters)" in message and len(message) < 2 * SHOWN_CHARS
