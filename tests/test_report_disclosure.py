"""The report's first section says what was trained (from the plan's cells, the model registry and the tuned
values), which side of each comparison carries tuned values, and the literature column compares like with
like; in the rendered report it comes before the leaderboard."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cifarbench.config import TrackingConfig
from cifarbench.models import build_model_from, list_models, model_info
from cifarbench.models.paper import paper_facts
from cifarbench.params import parse
from cifarbench.plan import BASELINE, all_cells
from cifarbench.report.build import gather, write_report
from cifarbench.report.disclosure import (
    ABLATION, OWN_STUDY, RECIPE, TUNED, data_text, disclosure_section, model_table, origins_table, regime_text,
    training_table, value_origin,
)
from cifarbench.report.literature import PUBLISHED
from cifarbench.report.render import Table
from cifarbench.report.sections import Inputs, leaderboard_section
from cifarbench.tracking import tags as t
from cifarbench.tracking.runs import Tracker
from small_params import small_params

# lstm's study searches no weight decay (its baseline has none); vgg11's best trial was trial 0, the recipe's own.
TUNED_VALUES = {"lenet5": {"lr": 0.0123, "weight_decay": 1.0e-4}, "alexnet": {"lr": 3.0e-3, "weight_decay": 2.0e-4},
                "vgg11": {"lr": 0.05, "weight_decay": 5.0e-4}, "resnet18": {"lr": 0.2, "weight_decay": 1.0e-3},
                "lstm": {"lr": 3.0e-3}}


def small_plan(**changes):
    budget = {"presets__default__test_skip": 2000, "presets__default__test_subset": None}
    return parse(small_params(**(budget | changes))).plan


def baseline_cells(plan, tuned=None) -> dict:
    return {c.arch: c for c in all_cells(plan, tuned) if c.ablation == BASELINE}


def test_model_table_names_width_size_stem_and_what_departs_from_the_paper():
    plan = small_plan()
    table = model_table(plan)
    cells = baseline_cells(plan)
    assert list(table.index) == list(plan.architectures)
    for arch, cell in cells.items():
        assert table.loc[arch, "width"] == f"{cell.model.width:g}"
        size = sum(p.numel() for p in build_model_from(cell.model).parameters())
        assert table.loc[arch, "parameters"] == f"{size:,}"
    assert table.loc["resnet18", "first conv"] == "stride 2 (stem_stride)"  # params_small: stem_stride 2
    assert table.loc["vgg11", "first conv"] == "stride 1" and table.loc["lstm", "first conv"] == "no conv"
    assert table.loc["vgg11", "normalization (paper)"] == "batch (none)"  # VGG-BN: batch norm the paper lacks
    assert table.loc["resnet18", "normalization (paper)"] == "batch (batch)"
    assert table.loc["lstm", "normalization (paper)"] == "none (none)"
    assert table.loc["alexnet", "dropout (paper)"] == "0.5 (0.5)"
    assert table.loc["vgg11", "conv init"] == "He (2/fan_in)" and table.loc["lstm", "conv init"] == "no conv"
    assert "local response normalization" in table.loc["alexnet", "paper's, not here"]


def test_googlenet_shows_its_missing_paper_parts_and_a_one_channel_branch():
    tree = small_params(presets__default__test_skip=2000)
    tree["architectures"] = {"googlenet": {"presets": {"default": {"model": {"width": 0.0625, "stem_stride": 2},
                                                                   "train": {"epochs": 24}}}}}
    row = model_table(parse(tree).plan).loc["googlenet"]
    assert row["normalization (paper)"] == "batch (none)" and row["dropout (paper)"] == "0 (0.4)"
    assert "auxiliary classifiers" in row["paper's, not here"]
    assert row["narrowest conv"] == "1 channel"  # width 0.0625 of a 16-channel 5x5-reduce branch


@pytest.mark.parametrize("arch", list_models())
def test_every_registered_family_has_paper_facts(arch):
    facts = paper_facts(model_info(arch).family)
    assert 0 <= facts.dropout < 1


def test_training_table_names_optimizer_epochs_and_where_lr_and_wd_came_from():
    plan = small_plan()
    table = training_table(plan, TUNED_VALUES)
    for arch, cell in baseline_cells(plan, TUNED_VALUES).items():
        assert table.loc[arch, "epochs"] == str(cell.train.epochs)
        assert table.loc[arch, "batch size"] == str(cell.train.batch_size)
        assert table.loc[arch, "schedule"] == cell.train.schedule.name
    assert table.loc["alexnet", "optimizer"] == "Adam" and table.loc["lstm", "optimizer"] == "Adam"
    assert table.loc["lenet5", "optimizer"] == "SGD, Nesterov momentum 0.9"
    assert table.loc["lenet5", "lr"] == "0.0123 (tuned)" and table.loc["lenet5", "weight decay"] == "0.0001 (tuned)"
    assert table.loc["vgg11", "lr"] == "0.05 (tuned: the recipe's value won)"
    assert table.loc["lstm", "lr"] == "0.003 (tuned)" and table.loc["lstm", "weight decay"] == "0 (recipe)"
    untuned = training_table(plan, {})
    assert untuned.loc["lenet5", "lr"] == "0.05 (recipe)" and untuned.loc["alexnet", "lr"] == "0.001 (recipe)"


def test_value_origin_follows_the_plans_tuned_values_rule():
    specs = small_plan().ablations
    tuned = TUNED_VALUES["lenet5"]
    assert value_origin("lr", specs["baseline"], tuned) == TUNED
    assert value_origin("weight_decay", specs["no_l2"], tuned) == ABLATION  # no_l2 keeps its 0
    assert value_origin("lr", specs["no_l2"], tuned) == TUNED  # ... and takes the tuned lr
    assert value_origin("weight_decay", specs["dropout"], None) == RECIPE  # the preset does not tune
    assert value_origin("weight_decay", specs["no_reg"], None) == ABLATION


def test_origins_table_says_which_side_of_each_comparison_carries_tuned_values():
    table = origins_table(small_plan(), TUNED_VALUES)
    assert table.loc["dropout", "= with − without"] == "dropout − baseline"
    assert table.loc["dropout", "lr: with / without"] == "tuned / tuned"
    # lstm's weight decay is its recipe's 0 on both sides (its study searched lr only)
    assert table.loc["dropout", "wd: with / without"] == "tuned / tuned; recipe / recipe for lstm"
    assert table.loc["L2 weight decay", "= with − without"] == "baseline − no_l2"
    assert table.loc["L2 weight decay", "wd: with / without"].startswith("tuned / ablation")
    assert table.loc["L1 penalty", "wd: with / without"] == "ablation / ablation"
    # no_bn is n/a for lenet5 and alexnet (no batch norm to remove) and lstm (no switch): the row covers the
    # architectures that run both cells, vgg11 and resnet18, both tuned
    assert table.loc["batch norm", "wd: with / without"] == "tuned / tuned"
    # an optimizer ablation keeps its own lr (plan.tuned_values): Adam its 1e-3, plain SGD the hand-set one
    assert table.loc["Adam vs SGD+momentum", "lr: with / without"] == "ablation / tuned"
    assert table.loc["momentum", "lr: with / without"] == "tuned / recipe"
    assert table.loc["momentum", "wd: with / without"] == "tuned / tuned"
    untuned = origins_table(small_plan(), {})
    assert set(untuned["lr: with / without"]) == {"recipe / recipe", "ablation / recipe"}


def test_an_ablation_tuned_on_its_own_reads_tuned_own_study_on_its_side_of_each_comparison():
    plan = small_plan(ablations__no_bn__tune="own")
    own = {"vgg11/no_bn": {"lr": 0.01, "weight_decay": 1.0e-4}, "resnet18/no_bn": {"lr": 0.05, "weight_decay": 1.0e-4}}
    assert value_origin("lr", plan.ablations["no_bn"], own["vgg11/no_bn"]) == OWN_STUDY == "tuned (own study)"
    assert value_origin("lr", plan.ablations["no_bn"], None) == RECIPE  # the preset does not tune
    table = origins_table(plan, TUNED_VALUES | own)
    assert table.loc["batch norm", "lr: with / without"] == "tuned / tuned (own study)"
    assert table.loc["batch norm", "wd: with / without"] == "tuned / tuned (own study)"
    assert table.loc["dropout", "lr: with / without"] == "tuned / tuned"  # every other ablation: the baseline's
    # an own study that has not run (values missing): that side is the recipe's, never the baseline's study's
    assert origins_table(plan, TUNED_VALUES).loc["batch norm", "lr: with / without"] == "tuned / recipe"
    text = [b for b in disclosure_section(plan, TUNED_VALUES | own).blocks if isinstance(b, str)]
    assert any("`tune: own` (no_bn) is searched on its own cell" in b for b in text)


def test_data_text_says_how_many_images_of_which_split_and_what_is_not_scored():
    budget = small_plan().presets["default"]
    text = data_text(budget)
    assert "1,000 training images (a stratified draw per seed" in text
    assert "500 validation images" in text
    assert ("8,000 test images (official test images 2,000-9,999; 0-1,999 were looked at when a budget was chosen "
            "and are not scored)") in text
    assert "seeds 0, 1" in text
    some = small_plan(presets__default__test_subset=3000).presets["default"]
    assert "3,000 test images (official test images 2,000-4,999;" in data_text(some)
    everything = small_plan(presets__default__test_skip=0).presets["default"]
    assert "all 10,000 official test images" in data_text(everything)


def test_regime_sentence_says_scaled_down_models_on_limited_data():
    text = regime_text(small_plan())
    assert text.startswith("Scaled-down models (width 0.125-2,") and "1,000 training images" in text
    assert "not a ranking of the papers' models" in text


def test_literature_lists_only_the_same_architecture_at_the_same_depth():
    assert "vgg11" not in PUBLISHED  # kuangliu has VGG16 only
    for arch, (_, source) in PUBLISHED.items():
        model_info(arch)  # a registered model of this package
        depth = re.findall(r"\d+", arch)[-1]
        assert depth in source, f"{arch}: the source names another depth: {source}"
    assert "best test-set checkpoint" in PUBLISHED["resnet18"][1] and "350-epoch" in PUBLISHED["resnet18"][1]
    assert PUBLISHED["resnet20"][0] == 91.25 and PUBLISHED["densenet_bc100"][0] == 95.49
    board = pd.DataFrame({"test_acc_mean": [0.91, 0.93], "test_acc_std": [0.002, 0.001], "n": [3, 3],
                          **{c: [1.0, 1.0] for c in ("params", "flops_per_image", "train_seconds", "images_per_s",
                                                      "lr", "weight_decay")}, "optimizer": ["momentum"] * 2},
                         index=pd.Index(["vgg11", "resnet18"], name="arch"))
    empty = pd.DataFrame()
    inputs = Inputs("full", list(board.index), [], empty, empty, empty, empty, empty, {}, {})
    section = leaderboard_section(board, inputs)
    published = [b for b in section.blocks if isinstance(b, Table)][1].frame
    assert published.loc["vgg11", "published %"] == "no published number" and published.loc["vgg11", "source"] == ""
    assert published.loc["resnet18", "published %"] == "93.02"
    assert "not a ranking" in section.guide and "Best first" not in section.guide


def test_no_plan_gives_a_section_that_says_so():
    assert disclosure_section(None, {}).blocks == []


def log_baseline_runs(plan, tracking: TrackingConfig) -> None:
    """One finished, current run per baseline cell in a real MLflow store, as the runner logs them."""
    tracker = Tracker.open(tracking)
    for cell in baseline_cells(plan).values():
        tags = {**t.run_identity(plan.preset, cell.arch, BASELINE, 0), t.ABLATION_GROUP: cell.group,
                t.CONFIG_HASH: cell.config_hash()}
        with tracker.training_run(f"{cell.name}/seed0", tags, {**cell.config(), "seed": 0}) as log:
            log.log_epoch({"train_loss": 2.0, "train_acc": 0.3, "val_loss": 2.1, "val_acc": 0.28, "lr": 0.01,
                           "seconds": 1.0, "images_per_s": 100.0}, 1)
            log.log_final({"test_acc": 0.3, "stopped_epoch": 1, "params": 1000, "flops_per_image": 1e6,
                           "train_seconds": 1.0, "images_per_s": 100.0}, {t.STATUS: "completed"})
            log.mark_current()


@pytest.mark.slow  # ~20 s on 2 busy cores, most of it MLflow creating its SQLite store
def test_the_rendered_report_opens_with_what_was_trained(tmp_path):
    tree = small_params(presets__default__test_skip=2000, presets__default__seeds=[0])
    tree["architectures"] = {a: tree["architectures"][a] for a in ("lenet5", "lstm")}
    tree["ablations"] = {a: tree["ablations"][a] for a in ("baseline", "flip")}
    params = parse(tree)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    log_baseline_runs(params.plan, tracking)
    write_report(gather(params.plan, tracking), tmp_path / "reports")
    text = (tmp_path / "reports" / "comparison.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[:3] == ["Contents", "0. What was trained", "1. Leaderboard: baselines"]
    first = text.split("## 0. What was trained", 1)[1].split("## 1.", 1)[0]
    assert "| lenet5 | 2 |" in first and "| lstm |" in first
    assert "official test images 2,000-3,999" in first and "Scaled-down models" in first
    assert "the report's section 0" in text  # the baseline's `about`, no longer "as in the paper"


def test_an_optimizer_tuned_on_its_own_reads_tuned_own_study_for_its_lr_and_weight_decay():
    plan = small_plan(ablations__adam__tune="own", ablations__sgd__tune="own")
    own = {f"{arch}/{opt}": {"lr": 3.0e-3, "weight_decay": 2.0e-5} for arch in ("lenet5", "vgg11", "resnet18")
           for opt in ("adam", "sgd")}
    assert value_origin("lr", plan.ablations["adam"], own["lenet5/adam"]) == OWN_STUDY
    assert value_origin("lr", plan.ablations["adam"], None) == ABLATION  # not tuned: its hand-set 1e-3
    table = origins_table(plan, TUNED_VALUES | own)
    assert table.loc["Adam vs SGD+momentum", "lr: with / without"] == "tuned (own study) / tuned"
    assert table.loc["momentum", "wd: with / without"] == "tuned / tuned (own study)"
