"""The `cifarbench` command: one module per subcommand in cifarbench.commands, each importing the library only
when it runs, so help answers at once; the commands that read the whole params take --params and --preset."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import pytest

from cifarbench.cli import COMMANDS, main
from project import ROOT

HEAVY = ("torch", "mlflow", "optuna", "pandas")  # seconds to import each; no help text needs them

HELP_CHILD = """
import sys
from cifarbench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=lambda c: " ".join(["cifarbench", *c]))
def test_help_imports_no_heavy_library(command):
    done = subprocess.run([sys.executable, "-c", HELP_CHILD.format(heavy=HEAVY), *command, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *shown, imported = done.stdout.splitlines()
    assert "usage: cifarbench" in "\n".join(shown)
    assert imported == "", f"`cifarbench {' '.join(command)} --help` imported {imported}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_is_a_module_of_the_command_layer(name):
    module = importlib.import_module(f"cifarbench.commands.{name}")
    assert callable(module.configure) and callable(module.run)
    assert module.DESCRIPTION == COMMANDS[name], f"cli.COMMANDS[{name!r}] should repeat its module's DESCRIPTION"


@pytest.mark.parametrize("name", ["train", "tune", "report", "calibrate", "nightly"])
def test_the_commands_of_the_whole_params_take_params_and_preset(name):
    import argparse

    parser = argparse.ArgumentParser()
    importlib.import_module(f"cifarbench.commands.{name}").configure(parser)
    options = {o for action in parser._actions for o in action.option_strings}
    assert {"--params", "--preset"} <= options


def test_an_undefined_preset_is_named_with_the_valid_ones(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / "params.yaml", tmp_path / "elsewhere.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--params", "elsewhere.yaml", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "smoke" in err and "Traceback" not in err
