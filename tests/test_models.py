"""The model zoo: every registered name builds, trains and round-trips; the switches do what they say;
width-1 sizes match the reference implementations. Forward passes run at a small width to stay fast."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
from pydantic import ValidationError

from cifarbench.cli import main
from cifarbench.config import parse_section
from cifarbench.errors import ConfigError
from cifarbench.models import ModelConfig, build_model, build_model_from, list_models, model_info
from cifarbench.models.layers import group_count
from cifarbench.models.profile import count_parameters, flops_per_image, throughput

NAMES = list_models()
SWITCHABLE = [n for n in NAMES if model_info(n).has_norm_switch]
POOLED = [n for n in NAMES if model_info(n).has_pooling_switch]
SMALL = 0.125  # width for forward/backward tests: every family's structure, a fraction of the cost
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Batches of 2 images gain nothing from a second OpenMP thread, and lose much to spinning against
    other processes on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def active_dropouts(model: nn.Module) -> list[nn.Module]:
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    return drops + [m for m in model.modules() if isinstance(m, nn.RNNBase) and m.dropout > 0]


def has_norm(model: nn.Module) -> bool:
    return any(isinstance(m, NORMS) for m in model.modules())


def test_registry_has_every_family_of_the_issue():
    required = {"lenet5", "alexnet", "vgg11", "vgg16", "googlenet", "resnet18", "resnet20", "resnet56"}
    assert required | {"densenet121", "densenet_bc100", "lstm", "gru", "mlp"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model = build_model(name, width=SMALL)
    logits = model(images())
    assert logits.shape == (2, 10) and logits.dtype == torch.float32
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_differ_exactly_when_dropout_or_norm(name):
    for dropout in (None, 0.3):
        model = build_model(name, width=SMALL, dropout=dropout).eval()
        x = images()
        with torch.no_grad():
            evaluated = model(x)
            trained = model.train()(x)
        stochastic = bool(active_dropouts(model)) or has_norm(model)
        assert stochastic == (dropout == 0.3 or model_info(name).default_dropout > 0 or has_norm(model))
        assert torch.allclose(evaluated, trained) != stochastic, f"dropout={dropout}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name):
    torch.manual_seed(0)
    original = build_model(name, width=SMALL).eval()
    original.train()(images())  # move any BN running statistics away from their initial values
    original.eval()
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    copy = build_model(name, width=SMALL).eval()
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(original(images()), copy(images()))


@pytest.mark.parametrize("name", NAMES)
def test_runs_under_bf16_autocast(name):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert build_model(name, width=SMALL)(images()).shape == (2, 10)


# Reference sizes: the issue's list (kuangliu/pytorch-cifar, torchvision, He et al. 2016 Table 6,
# Huang et al. 2017 Table 2 rounds DenseNet-BC-100 to 0.8M; it has 0.77M), and the widths of the CPU
# preset as measured in shared/notes/cpu-calibration.md.
REFERENCE_PARAMS = [
    ("resnet18", 1, 11.17e6), ("vgg16", 1, 14.73e6), ("densenet121", 1, 6.96e6), ("googlenet", 1, 6.17e6),
    ("lenet5", 1, 62e3), ("resnet20", 1, 0.27e6), ("resnet56", 1, 0.85e6), ("resnet110", 1, 1.7e6),
    ("densenet_bc100", 1, 0.77e6), ("lstm", 1, 117e3), ("mlp", 1, 1.71e6),
    ("lenet5", 2, 245e3), ("alexnet", 0.25, 1.46e6), ("vgg11", 0.25, 580e3), ("vgg16", 0.25, 924e3),
    ("resnet18", 0.125, 176e3), ("googlenet", 0.125, 101e3), ("densenet121", 0.125, 119e3),
]  # fmt: skip


@pytest.mark.parametrize("name, width, expected", REFERENCE_PARAMS)
def test_parameter_counts_match_references(name, width, expected):
    assert count_parameters(build_model(name, width=width)) == pytest.approx(expected, rel=0.02)


def norm_kinds(model: nn.Module) -> set[str]:
    """Which kinds of normalization a model has: batch, instance, layer (GroupNorm of one group), group."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kinds.add("batch")
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm):
            kinds.add("instance")
        elif isinstance(m, nn.GroupNorm):
            kinds.add("layer" if m.num_groups == 1 else "group")
    return kinds


def layer_types(model: nn.Module, *, but=()) -> list[str]:
    """The model's modules' types in order, leaving out the types in `but`."""
    return [type(m).__name__ for m in model.modules() if not isinstance(m, but)]


@pytest.mark.parametrize("name", SWITCHABLE)
@pytest.mark.parametrize("norm", ["batch", "group", "layer", "instance", "none"])
def test_norm_switch_changes_the_norm_layers_only(name, norm):
    """Every norm of the model is of the kind asked, the rest of the model is the default's, and it trains."""
    width = 0.25 if name in ("lenet5", "alexnet") else SMALL
    model = build_model(name, width=width, norm=norm)
    groups = [m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)]
    if norm == "group":  # layers of 2-3 channels get 1 group, which is layer norm (group_count)
        assert "group" in norm_kinds(model) <= {"group", "layer"} and all(1 <= g <= 32 for g in groups)
    else:
        assert norm_kinds(model) == (set() if norm == "none" else {norm})
    norms_and_convs = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.Identity, nn.Conv2d)
    default = build_model(name, width=width)
    assert layer_types(model, but=norms_and_convs) == layer_types(default, but=norms_and_convs)
    logits = model.train()(images())
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", SWITCHABLE)
def test_the_default_norm_is_the_familys(name):
    default = model_info(name).default_norm
    assert norm_kinds(build_model(name, width=SMALL)) == (set() if default == "none" else {default})


@pytest.mark.parametrize("channels, groups", [(64, 32), (512, 32), (8, 4), (6, 3), (12, 6), (13, 1), (1, 1), (2, 1)])
def test_group_norm_keeps_at_least_two_channels_a_group(channels, groups):
    assert group_count(channels) == groups


def pools(model: nn.Module) -> list[str]:
    """The down-sampling steps: pools of stride 2, and convs of stride 2 that keep their channel count."""
    steps = []
    for m in model.modules():
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and m.stride == 2:
            steps.append(type(m).__name__)
        elif isinstance(m, nn.Conv2d) and m.stride == (2, 2) and m.in_channels == m.out_channels:
            steps.append("conv")
    return steps


@pytest.mark.parametrize("name", POOLED)
@pytest.mark.parametrize("pooling", ["max", "avg", "conv"])
def test_pooling_switch_replaces_every_down_sampling_pool(name, pooling):
    width = 0.25 if name in ("lenet5", "alexnet") else SMALL
    default, model = build_model(name, width=width), build_model(name, width=width, pooling=pooling)
    expected = {"max": "MaxPool2d", "avg": "AvgPool2d", "conv": "conv"}[pooling]
    assert pools(model) == [expected] * len(pools(default)) and pools(default)
    if pooling != "conv":  # a pool for a pool: nothing else changes, not a parameter
        assert count_parameters(model) == count_parameters(default)
    logits = model.train()(images())
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_the_default_pooling_is_the_familys():
    assert {n: model_info(n).default_pooling for n in ("lenet5", "alexnet", "vgg11", "googlenet", "densenet121")} == {
        "lenet5": "max", "alexnet": "max", "vgg11": "max", "googlenet": "max", "densenet121": "avg"}
    assert pools(build_model("densenet121", width=SMALL)) == ["AvgPool2d"] * 3
    # the Inception branches' stride-1 max pools are not down-sampling, and stay
    branch_pools = [m for m in build_model("googlenet", width=SMALL, pooling="avg").modules()
                    if isinstance(m, nn.MaxPool2d)]
    assert len(branch_pools) == 9 and all(m.stride == 1 for m in branch_pools)


@pytest.mark.parametrize("name", [n for n in NAMES if not model_info(n).has_pooling_switch])
def test_models_without_down_sampling_pools_have_no_pooling_switch(name):
    assert not [m for m in build_model(name, width=SMALL).modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    with pytest.raises(ConfigError, match=f"pooling does not apply to {name}"):
        build_model(name, width=SMALL, pooling="avg")


def test_instance_norm_of_vggs_last_one_pixel_maps_is_refused():
    with pytest.raises(ConfigError, match="instance norm is a constant"):
        build_model("vgg11", width=SMALL, norm="instance", pooling="conv")


@pytest.mark.parametrize("name", NAMES)
def test_dropout_switch(name):
    assert not active_dropouts(build_model(name, width=SMALL, dropout=0))
    drops = active_dropouts(build_model(name, width=SMALL, dropout=0.3))
    assert drops and all(m.p == 0.3 for m in drops)


def test_paper_defaults():
    assert model_info("alexnet").default_dropout == 0.5 and model_info("alexnet").default_norm == "none"
    assert model_info("vgg16").default_dropout == 0.5 and model_info("vgg16").default_norm == "batch"
    assert model_info("lenet5").default_norm == "none" and model_info("resnet18").default_dropout == 0
    assert not model_info("lstm").has_norm_switch and "Hochreiter" in model_info("lstm").paper


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "resnet-18"}, ["resnet-18", "resnet18", "lenet5"]),
        ({"name": "vgg16", "width": 0}, ["width"]),
        ({"name": "vgg16", "width": -1.0}, ["width"]),
        ({"name": "vgg16", "dropout": 1.0}, ["dropout"]),
        ({"name": "vgg16", "dropout": -0.1}, ["dropout"]),
        ({"name": "lstm", "norm": "batch"}, ["norm", "lstm"]),
        ({"name": "mlp", "norm": "none"}, ["norm", "mlp"]),
        ({"name": "resnet18", "pooling": "avg"}, ["pooling", "resnet18"]),
        ({"name": "vgg11", "norm": "batchnorm"}, ["norm", "batch", "group", "layer", "instance"]),
        ({"name": "vgg11", "pooling": "min"}, ["pooling", "max", "avg", "conv"]),
        ({"name": "vgg11", "init": "xavier"}, ["init", "he", "torch"]),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, words):
    args = dict(kwargs)
    with pytest.raises(ConfigError) as in_code:
        build_model(args.pop("name"), **args)
    with pytest.raises(ConfigError) as in_params:  # the same mistake in params.yaml
        parse_section(ModelConfig, kwargs, "model")
    for message in (str(in_code.value), str(in_params.value)):
        assert all(word in message for word in words), message


def test_model_config_builds_and_rejects():
    cfg = parse_section(ModelConfig, {"name": "lenet5", "width": 0.5, "dropout": 0.2}, "model")
    model = build_model_from(cfg, num_classes=3)
    assert model(images()).shape == (2, 3) and active_dropouts(model)[0].p == 0.2
    with pytest.raises(ConfigError, match=r"model\.name: .*valid names: .*lenet5"):
        parse_section(ModelConfig, {"name": "lenet"}, "model")
    with pytest.raises(ConfigError, match=r"model: .*norm does not apply to lstm"):
        parse_section(ModelConfig, {"name": "lstm", "norm": "none"}, "model")
    with pytest.raises(ConfigError, match=r"batch_norm was renamed to norm .*batch_norm: false is norm: none"):
        parse_section(ModelConfig, {"name": "vgg11", "batch_norm": False}, "model")
    with pytest.raises(ConfigError, match=r"model\.depth: unknown key"):
        parse_section(ModelConfig, {"name": "lstm", "depth": 2}, "model")


@pytest.mark.parametrize("name", ["vgg11", "googlenet", "densenet121"])
def test_he_init_keeps_a_deep_net_without_norm_learning_from_its_first_layer(name):
    """Without batch norm, PyTorch's default conv init shrinks the signal layer by layer: the first conv's
    weight gradient at init is ~1e-5 of He init's in these nets (docs/calibration/2026-12-03-init.md), and
    their no_bn cells never left chance. He init (the default) keeps it within an order of magnitude of the
    last conv's."""
    def first_and_last_grad(init: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = build_model(name, width=0.125, norm="none", init=init)
        model(images(16)).logsumexp(1).mean().backward()
        grads = [p.grad.std().item() for p in model.parameters() if p.dim() == 4]
        return grads[0], grads[-1]

    first, last = first_and_last_grad("he")
    assert first > last / 10
    assert first_and_last_grad("torch")[0] < first / 30
    assert build_model_from(ModelConfig(name=name, width=0.125)).state_dict().keys() == \
        build_model(name, width=0.125, init="torch").state_dict().keys()  # the same layers: only their start differs


def test_he_init_is_the_default_and_starts_convs_at_variance_2_over_fan_in():
    torch.manual_seed(0)
    conv = next(m for m in build_model("vgg11", width=1.0).modules() if isinstance(m, nn.Conv2d) and m.in_channels >= 64)
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.var().item() == pytest.approx(2 / fan_in, rel=0.05)
    assert conv.bias is None or not conv.bias.any()


def test_flops_per_image():
    # LeNet-5 multiply-adds: conv1 6x28x28x75 + conv2 16x10x10x150 + FC 400x120 + 120x84 + 84x10; 2 FLOPs each.
    assert flops_per_image(build_model("lenet5")) == 2 * (6 * 28 * 28 * 75 + 16 * 10 * 10 * 150 + 48000 + 10080 + 840)
    # LSTM: 32 steps x 4 gates x 128 units x (96 + 128) inputs, plus the classifier; counted, not skipped.
    assert flops_per_image(build_model("lstm")) == 2 * (32 * 4 * 128 * (96 + 128) + 128 * 10)


@pytest.mark.parametrize("train, dtype", [(True, "fp32"), (False, "bf16")])
def test_throughput_is_positive_and_leaves_model_untouched(train, dtype):
    model = build_model("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert throughput(model, batch_size=4, train=train, dtype=dtype, repeats=2) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_models_command(capsys):
    assert main(["models", "--names", "lenet5,lstm", "--width", "lenet5=2", "--bench", "--batch-size", "4",
                 "--seconds", "0", "--bf16", "on"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "MFLOPs/img" in out and "train fp32" in out and "infer bf16" in out
    assert "lenet5 | lenet | 2 | 244,962 |" in out and "lstm | recurrent | 1 | 117,002 |" in out
    assert main(["models", "--names", "mlp", "--bench", "--batch-size", "4", "--seconds", "0", "--bf16", "off"]) == 0
    assert "train fp32 | infer fp32\n" in capsys.readouterr().out
    assert main(["models", "--names", "lenet5,nope"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["models", "--width", "wide"]) == 2


@pytest.mark.parametrize("name", ["googlenet", "densenet121", "densenet_bc100", "resnet18", "resnet20"])
def test_stride_two_stem_quarters_the_flops(name):
    full, strided = build_model(name, width=0.125), build_model(name, width=0.125, stem_stride=2)
    assert strided(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in full.parameters()) == sum(p.numel() for p in strided.parameters())
    assert flops_per_image(strided) < 0.3 * flops_per_image(full)


def test_stem_stride_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="stem_stride applies only to .*googlenet.*resnet18"):
        build_model("vgg11", stem_stride=2)
    with pytest.raises(ConfigError, match="stem_stride must be 1"):
        build_model("googlenet", stem_stride=3)
    with pytest.raises(ValidationError, match="stem_stride does not apply to vgg11"):
        ModelConfig(name="vgg11", stem_stride=2)
