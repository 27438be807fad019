"""params -> cells: layering, applicability, and errors that name the key before any training. On the tests'
own params (tests/params_small.yaml), not the project's params.yaml."""

from __future__ import annotations

import copy

import pytest

from cifarbench.config import TOP_LEVEL_KEYS
from cifarbench.errors import ConfigError
from cifarbench.params import Params, load, parse
from cifarbench.pipeline import cell_key
from cifarbench.io import write_json_atomic
from cifarbench.paths import tuned_path
from cifarbench.plan import (
    AblationSpec, all_cells, read_tuned_values, resolve_cell, tuned_key, tuned_values, tuning_targets,
)
from small_params import PATH, small_params

PARAMS = small_params()
with_changes = small_params


@pytest.mark.parametrize("preset", ["smoke", "default"])
def test_every_preset_resolves_every_cell(preset):
    cells = all_cells(parse(with_changes(preset=preset)).plan)
    assert len(cells) == len(PARAMS["architectures"]) * len(PARAMS["ablations"])
    assert {c.preset for c in cells} == {preset}


def test_layers_apply_in_order():
    plan = parse(with_changes(preset="default")).plan
    base = resolve_cell(plan, "lenet5", "baseline")
    assert base.model.width == 2.0  # architectures.lenet5.presets.default
    assert base.train.optimizer.lr == 0.05  # architectures.lenet5 over recipe
    assert base.train.epochs == PARAMS["architectures"]["lenet5"]["presets"]["default"]["train"]["epochs"]
    assert base.train.batch_size == PARAMS["presets"]["default"]["train"]["batch_size"]
    assert base.train.augment.policy == "standard"  # recipe
    tuned = {"lenet5": {"lr": 0.01, "weight_decay": 1e-3}}  # by tuned_key: lenet5's baseline study
    no_l2 = resolve_cell(plan, "lenet5", "no_l2", tuned=tuned)
    assert no_l2.train.optimizer.weight_decay == 0.0  # the ablation wins over the tuned value
    assert no_l2.train.optimizer.lr == 0.01  # tuned lr is taken
    assert resolve_cell(plan, "lenet5", "baseline", tuned=tuned).train.optimizer.weight_decay == 1e-3


def test_cells_equal_to_baseline_are_not_applicable():
    plan = parse(with_changes(preset="default")).plan
    assert "same config as baseline" in resolve_cell(plan, "alexnet", "dropout").not_applicable  # paper already p=0.5
    assert "lstm has no normalization layers to switch" in resolve_cell(plan, "lstm", "no_bn").not_applicable
    assert resolve_cell(plan, "resnet18", "no_bn").not_applicable is None
    assert resolve_cell(plan, "resnet18", "no_bn").model.norm == "none"


def changed_fields(cell, other) -> set[str]:
    """The dotted config fields in which two cells differ."""
    def leaves(tree, prefix=""):
        if not isinstance(tree, dict):
            return {prefix: tree}
        return {k: v for key, value in tree.items() for k, v in leaves(value, f"{prefix}.{key}".lstrip(".")).items()}
    a, b = leaves(cell.config()), leaves(other.config())
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@pytest.mark.parametrize("arch, ablation, changed", [
    ("vgg11", "sgd", {"train.optimizer.name"}),  # momentum removed, the same (hand-set) lr and decay
    ("vgg11", "adam", {"train.optimizer.name", "train.optimizer.lr"}),
    ("vgg11", "const_lr", {"train.schedule.name"}),
    ("vgg11", "pool_avg", {"model.pooling"}),
    ("vgg11", "norm_group", {"model.norm"}),
    ("resnet18", "norm_group", {"model.norm"}),
    ("lenet5", "pool_avg", {"model.pooling"}),
    ("vgg11", "no_bn", {"model.norm"}),
    ("vgg11", "vflip", {"train.augment.vflip"}),  # against its `without`, flip
])
def test_each_new_ablation_differs_from_its_without_cell_in_exactly_its_fields(arch, ablation, changed):
    plan = parse(with_changes(preset="default")).plan
    cell = resolve_cell(plan, arch, ablation)
    without = resolve_cell(plan, arch, plan.ablations[ablation].buys.without if ablation == "vflip" else "baseline")
    assert cell.not_applicable is None and changed_fields(cell, without) == changed


@pytest.mark.parametrize("arch, ablation, reason", [
    ("resnet18", "pool_avg", "resnet18 has no down-sampling pools to switch"),
    ("lstm", "pool_avg", "lstm has no down-sampling pools to switch"),
    ("lstm", "norm_group", "lstm has no normalization layers to switch"),
    ("lenet5", "norm_group", "lenet5's baseline has no normalization for group norm to replace"),
    ("lenet5", "no_bn", "same config as baseline"),
    ("alexnet", "sgd", "alexnet's baseline trains with adam, not the recipe's momentum"),  # params_small: Adam
    ("alexnet", "adam", "alexnet's baseline trains with adam"),
    ("lstm", "sgd", "lstm's baseline trains with adam"),
])
def test_a_new_ablation_with_nothing_to_change_is_not_applicable(arch, ablation, reason):
    assert reason in resolve_cell(parse(with_changes(preset="default")).plan, arch, ablation).not_applicable


def test_pooling_that_is_already_the_familys_is_not_applicable():
    tree = with_changes(preset="default", architectures__densenet121={"presets": {"default": {"train": {"epochs": 2}}}})
    cell = resolve_cell(parse(tree).plan, "densenet121", "pool_avg")  # DenseNet's transitions already average
    assert "same config as baseline for densenet121" in cell.not_applicable


def test_a_norm_ablation_applies_where_a_preset_adds_the_norm():
    tree = with_changes(preset="default")
    tree["architectures"]["alexnet"]["presets"]["default"]["model"]["norm"] = "batch"  # AlexNet-BN
    cell = resolve_cell(parse(tree).plan, "alexnet", "norm_group")
    assert cell.not_applicable is None and cell.model.norm == "group"


def test_the_renamed_batch_norm_key_names_its_replacement():
    with pytest.raises(ConfigError, match=r"batch_norm was renamed to norm"):
        all_cells(parse(with_changes(preset="default", ablations__no_bn__model={"batch_norm": False})).plan)


def test_a_cells_key_changes_only_with_what_decides_its_numbers():
    """The train stage retrains a cell exactly when its key changes: its own config (not another ablation's,
    not the tuning budget, not another preset's), its seeds, and the data split."""
    data = {"archive_md5": "0" * 32, "val_size": 5000, "seed": 0}

    def keys(tree: dict, data: dict = data) -> dict:
        return {(c.arch, c.ablation): cell_key(c, data) for c in all_cells(parse(tree).plan)}

    before = keys(with_changes(preset="default"))
    edited = keys(with_changes(preset="default", ablations__crop__train={"augment": {"policy": "crop", "crop_padding": 2}}))
    assert {k for k in before if before[k] != edited[k]} == {(a, "crop") for a in PARAMS["architectures"]}
    budget = {**PARAMS["presets"]["default"], "tune_trials": 9, "about": "edited"}
    assert keys(with_changes(preset="default", presets__default=budget)) == before
    lenet = copy.deepcopy(PARAMS["architectures"]["lenet5"])
    lenet["presets"]["smoke"] = {"model": {"width": 0.25}}  # another preset's budget
    assert keys(with_changes(preset="default", architectures__lenet5=lenet)) == before
    seeds = {**PARAMS["presets"]["default"], "seeds": [0, 1, 2]}
    assert all(before[k] != v for k, v in keys(with_changes(preset="default", presets__default=seeds)).items())
    resplit = keys(with_changes(preset="default"), {**data, "seed": 1})
    assert all(before[k] != v for k, v in resplit.items())


def test_config_hash_tracks_the_config():
    plan = parse(with_changes(preset="default")).plan
    a, b = resolve_cell(plan, "vgg11", "baseline"), resolve_cell(plan, "vgg11", "flip")
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == resolve_cell(plan, "vgg11", "baseline").config_hash()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"preset": "huge"}, "preset: 'huge' is not defined; presets: smoke, default"),
        ({"architectures__resnet99": {}}, "unknown model 'resnet99'; valid names: "),
        ({"ablations__l1__train": {"optimizer": {"lr": -1}}}, r"train.optimizer.lr \(cell \w+/l1, set in .*ablations.l1\): Input should be greater than 0"),
        ({"ablations__flip__train": {"augment": {"policy": "flipp"}}}, r"train.augment.policy .*ablations.flip.*flipp"),
        ({"ablations__flip__train": {"epoch": 3}}, r"train.epoch \(cell \w+/flip, set in ablations.flip\): unknown key"),
        ({"presets__default__seeds": "zero"}, r"presets.default.seeds"),
        ({"ablations__flip__group": "colour"}, r"ablations.flip.group"),
        ({"recipe__train__optimizer__momentum": "high"}, r"train.optimizer.momentum .*set in recipe"),
    ],
)
def test_bad_params_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        all_cells(parse(with_changes(**{"preset": "default", **changes})).plan)


def test_unknown_cell_names_list_the_valid_ones():
    plan = parse(PARAMS).plan
    with pytest.raises(ConfigError, match="ablation 'l3' is not in params.yaml `ablations`: baseline, no_reg"):
        resolve_cell(plan, "lenet5", "l3")
    with pytest.raises(ConfigError, match="architecture 'vgg16' is not in params.yaml `architectures`"):
        resolve_cell(plan, "vgg16", "baseline")


TUNED = {"lr": 0.01, "weight_decay": 1e-3}


@pytest.mark.parametrize("ablation", ["no_reg", "no_l2", "l1"])
def test_an_ablation_setting_its_own_weight_decay_keeps_it_and_takes_the_tuned_lr(ablation):
    spec = AblationSpec.model_validate(PARAMS["ablations"][ablation])
    assert tuned_values(spec, TUNED) == {"lr": 0.01}
    cell = resolve_cell(parse(PARAMS).plan, "lenet5", ablation, tuned={"lenet5": TUNED})
    assert (cell.train.optimizer.lr, cell.train.optimizer.weight_decay) == (0.01, 0.0)


@pytest.mark.parametrize("ablation", ["sgd", "adam"])
def test_an_ablation_changing_the_optimizer_keeps_its_own_lr_and_takes_the_tuned_weight_decay(ablation):
    """The tuned lr was searched for the baseline's SGD+momentum: Adam keeps its own 1e-3, plain SGD the
    architecture's hand-set lr (0.05 for lenet5); coupled L2 is part of the loss and stays tuned."""
    spec = AblationSpec.model_validate(PARAMS["ablations"][ablation])
    assert tuned_values(spec, TUNED) == {"weight_decay": 1e-3}
    cell = resolve_cell(parse(PARAMS).plan, "lenet5", ablation, tuned={"lenet5": TUNED})
    own_lr = {"sgd": 0.05, "adam": 1.0e-3}[ablation]
    assert (cell.train.optimizer.name, cell.train.optimizer.lr, cell.train.optimizer.weight_decay) == (
        ablation, own_lr, 1e-3)


def test_an_optimizer_ablation_setting_its_own_weight_decay_keeps_it_too():
    spec = AblationSpec.model_validate({"group": "optimization", "about": "AdamW", "train": {
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.05}}})
    assert tuned_values(spec, TUNED) == {}


OPTIMIZER_STUDIES = {"lenet5": TUNED, "lenet5/adam": {"lr": 3.0e-3, "weight_decay": 2.0e-5},
            "lenet5/sgd": {"lr": 0.2, "weight_decay": 4.0e-4}}


@pytest.mark.parametrize("ablation", ["sgd", "adam"])
def test_an_optimizer_ablation_tuned_on_its_own_takes_its_own_studys_lr_and_weight_decay(ablation):
    """Each optimizer at its own tuned lr (issue #24): adam's lr 1e-3 is only its study's trial 0."""
    plan = parse(with_changes(**{f"ablations__{ablation}__tune": "own"})).plan
    assert tuned_key(plan, "lenet5", ablation) == f"lenet5/{ablation}"
    assert tuned_values(plan.ablations[ablation], OPTIMIZER_STUDIES[f"lenet5/{ablation}"]) == OPTIMIZER_STUDIES[f"lenet5/{ablation}"]
    opt = resolve_cell(plan, "lenet5", ablation, OPTIMIZER_STUDIES).train.optimizer
    assert (opt.name, opt.lr, opt.weight_decay) == (ablation, *OPTIMIZER_STUDIES[f"lenet5/{ablation}"].values())
    # its own study not run yet (or the preset does not tune): its hand-set values, never the baseline's study's
    untuned = resolve_cell(plan, "lenet5", ablation, {"lenet5": TUNED}).train.optimizer
    assert (untuned.lr, untuned.weight_decay) == ({"sgd": 0.05, "adam": 1.0e-3}[ablation], 5.0e-4)


def test_an_optimizer_ablation_tuned_on_its_own_keeps_a_weight_decay_it_sets():
    adamw = {"group": "optimization", "about": "AdamW", "tune": "own",
             "train": {"optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.05}}}
    plan = parse(with_changes(ablations__adamw=adamw)).plan  # lr and decay set: accepted, the lr is searched
    assert tuned_values(plan.ablations["adamw"], {"lr": 3.0e-3, "weight_decay": 2.0e-5}) == {"lr": 3.0e-3}
    opt = resolve_cell(plan, "lenet5", "adamw", {"lenet5/adamw": {"lr": 3.0e-3, "weight_decay": 0.05}}).train.optimizer
    assert (opt.name, opt.lr, opt.weight_decay) == ("adamw", 3.0e-3, 0.05)


def test_an_optimizer_ablation_tuned_on_its_own_gets_a_study_where_it_runs_only():
    targets = tuning_targets(parse(with_changes(ablations__adam__tune="own")).plan)
    # alexnet's default and lstm train with Adam, not the recipe's SGD+momentum: adam is n/a there, no study
    assert [t for t in targets if t[1] != "baseline"] == [("lenet5", "adam"), ("vgg11", "adam"), ("resnet18", "adam")]


@pytest.mark.parametrize("ablation", ["baseline", "dropout", "flip", "crop", "aug_none", "const_lr", "pool_avg",
                                      "norm_group", "vflip"])
def test_every_other_ablation_takes_the_tuned_lr_and_weight_decay(ablation):
    spec = AblationSpec.model_validate(PARAMS["ablations"][ablation])
    assert tuned_values(spec, TUNED) == TUNED
    cell = resolve_cell(parse(PARAMS).plan, "lenet5", ablation, tuned={"lenet5": TUNED})
    assert (cell.train.optimizer.lr, cell.train.optimizer.weight_decay) == (0.01, 1e-3)


def test_no_tuning_leaves_the_recipe_values():
    assert tuned_values(AblationSpec.model_validate(PARAMS["ablations"]["baseline"]), None) == {}
    cell = resolve_cell(parse(PARAMS).plan, "lenet5", "baseline")
    assert (cell.train.optimizer.lr, cell.train.optimizer.weight_decay) == (0.05, 5.0e-4)


def test_params_has_one_field_per_top_level_section_and_loads_once():
    assert set(Params.model_fields) == set(TOP_LEVEL_KEYS)
    params = load(PATH)
    assert params.preset == "default" and params.plan.preset == "default"
    assert params.tune.startup_trials == 4 and params.executor.kind == "local" and params.nightly.k == 3.0
    assert params.with_preset("smoke").plan.presets["smoke"].seeds == [0]
    with pytest.raises(ConfigError, match="preset: 'huge' is not defined"):
        params.with_preset("huge")


@pytest.mark.parametrize("dotted, message", [
    ("trackng", r"params\.yaml: trackng: unknown top-level section"),
    ("tracking__experment", r"params\.yaml: tracking\.experment: unknown key"),
    ("executor__kinds", r"params\.yaml: executor\.kinds: unknown key"),
    ("tune__pruner__nam", r"params\.yaml: tune\.pruner\.nam: unknown key"),
    ("nightly__florr", r"params\.yaml: nightly\.florr: unknown key"),
    ("data__seeds", r"params\.yaml: data\.seeds: unknown key"),
    ("presets__smoke__epochs", r"params\.yaml: presets\.smoke\.epochs: unknown key"),
    ("ablations__flip__modle", r"params\.yaml: ablations\.flip\.modle: unknown key"),
])
def test_unknown_keys_are_refused_at_every_level(dotted, message):
    with pytest.raises(ConfigError, match=message):
        parse(with_changes(**{dotted: 1}))


def test_an_empty_section_takes_its_defaults():
    assert parse(with_changes(nightly=None, executor=None)).nightly.k == 3.0


def test_a_preset_can_run_a_subset_of_an_architectures_ablations_and_names_the_rest():
    tree = with_changes(preset="default")
    tree["architectures"]["lenet5"]["presets"]["default"]["ablations"] = ["aug_none"]
    cells = {c.ablation: c for c in all_cells(parse(tree).plan) if c.arch == "lenet5"}
    assert cells["baseline"].not_applicable is None and cells["aug_none"].not_applicable is None
    assert "not in preset default for lenet5" in cells["no_reg"].not_applicable
    tree["architectures"]["lenet5"]["presets"]["default"]["ablations"] = ["aug_nothing"]
    with pytest.raises(ConfigError, match="architectures.lenet5.presets.default.ablations: aug_nothing"):
        parse(tree)


def test_a_preset_can_run_a_subset_of_the_architectures_and_refuses_an_unknown_one():
    tree = with_changes(preset="default")
    tree["presets"]["default"]["architectures"] = ["vgg11", "lenet5"]
    plan = parse(tree).plan
    assert list(plan.architectures) == ["lenet5", "vgg11"]  # params.yaml's order, not the list's
    assert {c.arch for c in all_cells(plan)} == {"lenet5", "vgg11"}
    assert {arch for arch, _ in tuning_targets(plan)} == {"lenet5", "vgg11"}
    assert len(parse(with_changes(preset="smoke")).plan.architectures) == len(PARAMS["architectures"])  # absent: all
    tree["presets"]["default"]["architectures"] = ["vgg12"]
    with pytest.raises(ConfigError, match=r"presets.default.architectures: vgg12 not in `architectures`"):
        parse(tree)
    parse(tree | {"preset": "smoke"})  # another preset's list is not checked: trimming `architectures` breaks no other
    with pytest.raises(ConfigError, match=r"presets.default.architectures: vgg12"):
        parse(tree | {"preset": "smoke"}).with_preset("default")


# --- tune: own (no_bn searched without batch norm, issue #20) ----------------------------------------------

OWN = {"vgg11": {"lr": 0.01, "weight_decay": 1e-3}, "vgg11/no_bn": {"lr": 0.002, "weight_decay": 2e-4},
       "alexnet": {"lr": 0.01, "weight_decay": 1e-3}, "alexnet/no_bn": {"lr": 0.002, "weight_decay": 2e-4}}


def test_a_tune_own_ablation_takes_its_own_studys_values_and_every_other_the_baselines():
    plan = parse(with_changes(preset="default", ablations__no_bn__tune="own")).plan
    values = lambda ablation, tuned=OWN: (  # noqa: E731
        resolve_cell(plan, "vgg11", ablation, tuned).train.optimizer.lr,
        resolve_cell(plan, "vgg11", ablation, tuned).train.optimizer.weight_decay)
    assert tuned_key(plan, "vgg11", "no_bn") == "vgg11/no_bn" and tuned_key(plan, "vgg11", "dropout") == "vgg11"
    assert values("no_bn") == (0.002, 2e-4)
    assert values("baseline") == values("dropout") == (0.01, 1e-3)
    assert values("no_l2") == (0.01, 0.0)  # the baseline's lr; its own weight decay 0
    # without its own study's values (not tuned) no_bn keeps the recipe's, never the baseline's study's
    assert values("no_bn", {"vgg11": OWN["vgg11"]}) == (0.05, 5.0e-4)
    # without `tune: own` it takes the baseline's, as every ablation did before
    assert resolve_cell(parse(with_changes(preset="default")).plan, "vgg11", "no_bn", OWN).train.optimizer.lr == 0.01


def test_an_own_studys_values_never_make_a_cell_applicable():
    """Whether an ablation changes the baseline is decided under the same tuned values on both sides: alexnet
    (no batch norm in params_small) stays n/a for no_bn although its own values differ from the baseline's."""
    plan = parse(with_changes(preset="default", ablations__no_bn__tune="own")).plan
    assert "same config as baseline" in resolve_cell(plan, "alexnet", "no_bn", OWN).not_applicable
    assert "has no normalization layers to switch" in resolve_cell(plan, "lstm", "no_bn", OWN).not_applicable


def test_the_tune_stage_plans_one_study_per_baseline_and_per_own_ablation_cell_the_preset_runs():
    tree = with_changes(preset="default", ablations__no_bn__tune="own")
    tree["architectures"]["resnet18"]["presets"]["default"]["ablations"] = ["aug_none"]  # no_bn not run here
    targets = tuning_targets(parse(tree).plan)
    # lenet5 and alexnet have no batch norm to remove (n/a), lstm no switch, resnet18 does not run no_bn
    assert [t for t in targets if t[1] != "baseline"] == [("vgg11", "no_bn")]
    assert [t for t in targets if t[1] == "baseline"] == [(a, "baseline") for a in PARAMS["architectures"]]
    both = tuning_targets(parse(with_changes(preset="default", ablations__no_bn__tune="own")).plan)
    assert [t for t in both if t[1] != "baseline"] == [("vgg11", "no_bn"), ("resnet18", "no_bn")]
    assert tuning_targets(parse(with_changes(preset="default")).plan) == [
        (a, "baseline") for a in PARAMS["architectures"]]  # no `tune: own`: the baseline studies only


def test_tune_is_baseline_or_own_and_own_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match=r"ablations\.no_bn\.tune"):
        parse(with_changes(ablations__no_bn__tune="mine"))
    with pytest.raises(ConfigError, match=r"ablations\.baseline\.tune: the baseline is always tuned by its own study"):
        parse(with_changes(ablations__baseline__tune="own"))
    tree = with_changes(ablations__no_bn__tune="own", ablations__no_bn__train={"optimizer": {"lr": 0.01}})
    with pytest.raises(ConfigError, match=r"ablations\.no_bn\.tune: own, but the ablation sets its lr itself"):
        parse(tree)
    # the same lr with another optimizer is accepted: only that optimizer's study's starting point
    tree = with_changes(ablations__no_bn__tune="own", ablations__no_bn__train={"optimizer": {"name": "adam", "lr": 0.01}})
    assert parse(tree).plan.ablations["no_bn"].keeps_own("lr") is False
    assert parse(with_changes(ablations__no_l2__tune="own")).plan.ablations["no_l2"].tune == "own"  # lr searched


def test_the_tuned_values_reader_reads_every_study_the_plan_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = with_changes(preset="default", ablations__no_bn__tune="own")
    tree["architectures"] = {a: tree["architectures"][a] for a in ("lenet5", "vgg11")}
    plan = parse(tree).plan
    with pytest.raises(ConfigError, match=r"runs/default/tuned/lenet5\.json not found: run `dvc repro`"):
        read_tuned_values(plan)
    assert read_tuned_values(plan, missing_ok=True) == {"lenet5": None, "vgg11": None, "vgg11/no_bn": None}
    write_json_atomic(tuned_path("default", "lenet5"), {"tuned": True, "optimizer": OWN["vgg11"]})
    write_json_atomic(tuned_path("default", "vgg11"), {"tuned": False, "optimizer": {"lr": 0.05}})  # not tuned
    with pytest.raises(ConfigError, match=r"runs/default/tuned/vgg11/no_bn\.json not found"):
        read_tuned_values(plan)
    write_json_atomic(tmp_path / "runs/default/tuned/vgg11/no_bn.json", {"tuned": True, "optimizer": OWN["vgg11/no_bn"]})
    tuned = read_tuned_values(plan)
    assert tuned == {"lenet5": OWN["vgg11"], "vgg11": None, "vgg11/no_bn": OWN["vgg11/no_bn"]}
    assert resolve_cell(plan, "vgg11", "no_bn", tuned).train.optimizer.lr == 0.002
