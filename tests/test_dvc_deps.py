"""dvc.yaml's code deps against the code each stage really runs: the import closure of its stage script
(cifarbench.codeclosure, static, imports inside functions included). A module the script imports but no dep
covers would let `dvc repro` skip a stage whose code changed; a dep nothing imports reruns it for nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from cifarbench.codeclosure import closure, module_file, module_name
from project import ROOT

SRC = ROOT / "src"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_script(stage: str) -> Path:
    found = re.fullmatch(r"python (stages/\w+\.py)", STAGES[stage]["cmd"])
    assert found, f"dvc.yaml stage {stage}: cmd should be `python stages/<name>.py`, got {STAGES[stage]['cmd']!r}"
    return ROOT / found.group(1)


def code_deps(stage: str) -> list[Path]:
    return [ROOT / d for d in STAGES[stage]["deps"] if d.startswith(("src/", "stages/"))]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or path.is_relative_to(dep) for dep in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_the_deps_cover_every_module_the_stage_imports(stage):
    script, deps = stage_script(stage), code_deps(stage)
    code = {p for p in closure([script], root=SRC) if p.is_relative_to(SRC)}
    assert covered(script, deps), f"dvc.yaml stage {stage}: list {script.relative_to(ROOT)} in deps"
    missing = sorted(str(p.relative_to(ROOT)) for p in code if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage}: add to deps (imported by {script.name}): {missing}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_code_dep_holds_a_module_the_stage_imports(stage):
    script, deps = stage_script(stage), code_deps(stage)
    code = closure([script], root=SRC) | {script}
    idle = [str(d.relative_to(ROOT)) for d in deps if not any(covered(p, [d]) for p in code)]
    assert not idle, f"dvc.yaml stage {stage}: no module it imports is in {idle}; remove them"


def test_the_closure_follows_every_kind_of_import(tmp_path):
    pkg = tmp_path / "cifarbench"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py", "unused.py"):
        (pkg / name).write_text("")
    (pkg / "a.py").write_text("import cifarbench.b\nfrom cifarbench import c\n\ndef f():\n    from cifarbench.sub.d import x\n")
    entry = tmp_path / "entry.py"
    entry.write_text("import os\nfrom cifarbench.a import f\n")
    found = {p.relative_to(tmp_path).as_posix() for p in closure([entry], root=tmp_path)}
    assert found == {"entry.py", "cifarbench/__init__.py", "cifarbench/a.py", "cifarbench/b.py", "cifarbench/c.py",
                     "cifarbench/sub/__init__.py", "cifarbench/sub/d.py"}


def test_no_library_module_imports_the_command_line():
    """cli.py is the top of the layers: the stage scripts call their command's entry point (cifarbench.commands)."""
    for path in sorted((SRC / "cifarbench").rglob("*.py")):
        if path.name == "cli.py" and path.parent.name == "cifarbench":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            assert "cifarbench.cli" not in names, f"{module_name(path, SRC)} imports cifarbench.cli"
    for script in sorted((ROOT / "stages").glob("*.py")):
        assert "cifarbench.cli" not in script.read_text(), f"{script.name}: call the stage's entry point, not the CLI"


# README "Layout": the package's modules bottom to top; a module imports only from lower ones.
LAYERS = ["redact", "errors", "paths", "config", "io", "processes", "progress", "codeclosure", "data", "models", "fastpaths", "engine",
          "tuned_file", "plan", "tracking",
          "execute", "runner", "pipeline", "calibrate", "tuning", "nightly.config", "params", "report", "nightly", "doctor",
          "commands", "cli"]


def layer(module: str) -> str:
    parts = module.split(".")[1:] or ["cifarbench"]
    return ".".join(parts[:2]) if parts[:2] == ["nightly", "config"] else parts[0]


def imported(path: Path) -> list[tuple[ast.AST, str]]:
    """(import statement, module name) for each `cifarbench.*` module `path` imports, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cifarbench"):
            found += [(node, node.module)] + [(node, f"cifarbench.{a.name}") for a in node.names if node.module ==
                                              "cifarbench" and module_file(f"cifarbench.{a.name}", SRC)]
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.startswith("cifarbench")]
    return found


def test_modules_import_only_from_lower_layers():
    wrong = []
    for path in sorted((SRC / "cifarbench").rglob("*.py")):
        here = layer(module_name(path, SRC))
        if here == "__init__":
            continue
        for _, name in imported(path):
            there = layer(name)
            if there in (here, "cifarbench"):
                continue
            if there not in LAYERS or LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module_name(path, SRC)} imports {name}")
    assert not wrong, "imports against the layers of README's Layout table:\n" + "\n".join(wrong)


def test_only_the_commands_load_the_params():
    """cifarbench.params puts together the sections the library's modules own, so it sits above all of them: a
    library module takes the values it uses, and only the command layer (cifarbench.commands) loads params.yaml."""
    wrong = [f"{module_name(path, SRC)} (line {node.lineno})" for path in sorted((SRC / "cifarbench").rglob("*.py"))
             if not module_name(path, SRC).startswith(("cifarbench.commands", "cifarbench.params"))
             for node, name in imported(path) if name == "cifarbench.params"]
    assert not wrong, ("import cifarbench.params only in cifarbench.commands; these should take the values they "
                       "use instead:\n" + "\n".join(wrong))


def test_tuning_does_not_import_the_params_that_import_it():
    """params imports TuneConfig from cifarbench.tuning; nothing tuning runs may import params back."""
    params = module_file("cifarbench.params", SRC)
    assert params in closure([params], root=SRC)  # the check below can see params at all
    assert module_file("cifarbench.tuning", SRC) in closure([params], root=SRC)
    assert params not in closure(["cifarbench.tuning"], root=SRC), "an import cycle: cifarbench.tuning -> params"


def test_params_yaml_is_as_dvc_writes_it_so_exp_run_set_param_changes_one_line(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml with DVC's own code (Hydra overrides merged into its
    round-trip YAML: line width 80, its own quoting, `null` as empty, lists in block style). A params.yaml
    already in that form changes in exactly the line set; any other form is reflowed, and the experiment's
    diff shows lines nobody changed."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    copy.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(copy, ["architectures.lenet5.presets.smoke.model.width=0.25"])
    before, after = (ROOT / "params.yaml").read_text().splitlines(), copy.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1, changed[:5]
    assert changed[0][1].strip() == "model: {width: 0.25}"  # the line under lenet5's `smoke:`


def test_a_small_float_set_by_dvc_exp_run_reads_as_a_number(tmp_path):
    """DVC writes `-S ...lr=1e-6` as `1e-06` (YAML 1.2); read as YAML 1.1 it would be the string '1e-06'."""
    from dvc.utils.hydra import apply_overrides

    from cifarbench.params import load

    copy = tmp_path / "params.yaml"
    copy.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(copy, ["architectures.lenet5.train.optimizer.lr=1e-6"])
    assert "lr: 1e-06" in copy.read_text()
    assert load(copy).plan.architectures["lenet5"].train["optimizer"]["lr"] == 1e-6
