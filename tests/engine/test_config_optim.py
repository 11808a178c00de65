"""Configs, recipes and learning-rate schedules."""
import math

import pytest
import torch

import resnets
from resnets import ConfigError
from resnets.engine.config import TrainConfig, list_recipes, load_recipe, make_config
from resnets.engine.ema import Lookahead
from resnets.engine.optim import lr_factor, make_optimizer, set_lr


def test_shipped_recipes_load_and_validate():
    names = list_recipes()
    assert {"digits", "cifar10-resnet20-paper", "cifar10-resnet56-paper", "cifar10-resnet110-paper",
            "cifar10-quick", "imagenet-resnet50"} <= set(names)
    for name in names:
        make_config(name)


@pytest.mark.parametrize("settings, message", [
    ({"epochs": "ten"}, "setting 'epochs' must be a number, got 'ten'"),
    ({"batch_size": 12.5}, "setting 'batch_size' must be a whole number, got 12.5"),
    ({"hflip": "no"}, "setting 'hflip' must be true or false, got 'no'"),
    ({"seed": True}, "setting 'seed' must be a whole number, got True"),
    ({"schedule": "cosin"}, "setting 'schedule' must be one of cosine, linear, step, multistep, poly, constant"),
    ({"rrc_scale": [0.08, "all"]}, "setting 'rrc_scale' must be a list of numbers"),
    ({"rrc_scale": [0.5, 0.1]}, "setting 'rrc_scale' must be two numbers 0 < low <= high <= 1"),
    ({"model_args": ["drop_path_rate"]}, "setting 'model_args' must be a mapping of names to values"),
    ({"lr": 0}, r"setting 'lr' must be in \(0, 10\], got 0"),
    ({"workers": -1}, "setting 'workers' must be >= 0, got -1"),
])
def test_every_setting_is_checked_on_creation_with_one_line_naming_it(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)  # from Python
    with pytest.raises(ConfigError, match=message):
        make_config(None, **settings)  # as the command line and recipes make it


def test_a_recipe_with_a_wrong_type_is_refused_and_yaml_exponents_are_numbers(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match="setting 'epochs' must be a number, got 'ten'"):
        make_config(str(path))
    path.write_text("lr: [1\n")
    with pytest.raises(ConfigError) as caught:
        make_config(str(path))
    assert "\n" not in str(caught.value) and "not valid YAML: expected ',' or ']'" in str(caught.value)
    assert str(caught.value).endswith("(line 2, column 1)")
    path.write_text("lr: 1e-3\nweight_decay: 5E-4\nepochs: 3\n")  # YAML 1.1 alone reads these as strings
    cfg = make_config(str(path))
    assert (cfg.lr, cfg.weight_decay, cfg.epochs) == (1e-3, 5e-4, 3)


def test_whole_numbers_are_numbers_and_nothing_is_converted():
    cfg = TrainConfig(epochs=3, lr=1, val_size=500)
    assert (cfg.epochs, cfg.lr, cfg.val_size) == (3, 1, 500) and type(cfg.epochs) is int


def test_every_setting_has_a_help_text_for_the_command_line():
    from dataclasses import fields

    assert all(len(f.metadata.get("help", "")) > 5 for f in fields(TrainConfig))


def test_paper_recipe_is_the_paper():
    cfg = make_config("cifar10-resnet56-paper")
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.momentum) == ("resnet56", 128, 0.1, 1e-4, 0.9)
    # 45k training images / 128 = 351 full batches an epoch: exactly 32k, 48k and 64k iterations.
    assert [round(m * 351) for m in cfg.milestones] == [32000, 48000] and round(cfg.epochs * 351) == 64000
    assert make_config("cifar10-resnet110-paper").warmup_constant


def test_cosine_recipe_is_the_paper_but_for_schedule_and_weight_decay():
    paper, cosine = make_config("cifar10-resnet56-paper"), make_config("cifar10-resnet-cosine")
    same = ("model", "batch_size", "lr", "momentum", "crop_padding", "hflip", "nesterov", "label_smoothing")
    assert all(getattr(paper, k) == getattr(cosine, k) for k in same)
    assert (cosine.schedule, cosine.weight_decay, cosine.val_size) == ("cosine", 5e-4, 0)
    # all 50,000 images / 128 = 390 full batches an epoch: the paper's 64,000 iterations
    assert round(cosine.epochs * 390) == 64000


def test_overrides_beat_the_recipe():
    cfg = make_config("cifar10-resnet20-paper", lr=0.05, epochs=None)
    assert cfg.lr == 0.05 and cfg.epochs == 182.336182


def test_recipe_from_a_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: resnet32\nepochs: 3\nmodel_args: {drop_path_rate: 0.1}\n")
    cfg = make_config(str(path))
    assert cfg.model == "resnet32" and cfg.model_args == {"drop_path_rate": 0.1}


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "'batch_size'"), ({"lr": -1.0}, "'lr'"), ({"lr": 100.0}, "'lr'"),
    ({"epochs": 0}, "'epochs'"), ({"ema_decay": 1.5}, "'ema_decay'"), ({"precision": "fp8"}, "'precision'"),
    ({"label_smoothing": 1.0}, "'label_smoothing'"), ({"lerning_rate": 0.1}, "unknown setting 'lerning_rate'"),
    ({"lookahead_every": -1}, "'lookahead_every'"), ({"lookahead_decay": 1.0}, "'lookahead_decay'"),
])
def test_out_of_range_settings_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_config(None, **kwargs)


def test_an_unknown_setting_says_where_the_settings_are_listed():
    with pytest.raises(ConfigError, match=r"unknown setting 'epoch'; did you mean epochs\?"):
        make_config(None, epoch=3)
    with pytest.raises(ConfigError, match=r"unknown setting 'bogus'; `resnets train --help` lists the settings"):
        make_config(None, bogus=1)


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean cifar10-resnet56-paper"):
        load_recipe("cifar10-resnet56-papr")


def test_schedules():
    cos = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=2, warmup_factor=0.1)
    assert lr_factor(cos, 0) == pytest.approx(0.1) and lr_factor(cos, 1) == pytest.approx(0.55)
    assert lr_factor(cos, 2) == pytest.approx(1.0) and lr_factor(cos, 6) == pytest.approx(0.5)
    assert lr_factor(cos, 10) == pytest.approx(0.0, abs=1e-12)
    multi = TrainConfig(schedule="multistep", milestones=[91, 136])
    assert [lr_factor(multi, e) for e in (0, 90.9, 91, 136)] == pytest.approx([1, 1, 0.1, 0.01])
    step = TrainConfig(schedule="step", step_size=30, gamma=0.5)
    assert lr_factor(step, 59.9) == 0.5 and lr_factor(step, 60) == 0.25
    warm = TrainConfig(warmup_epochs=1.2, warmup_constant=True, warmup_factor=0.1, schedule="constant")
    assert lr_factor(warm, 1.0) == 0.1 and lr_factor(warm, 1.3) == 1.0
    assert math.isfinite(lr_factor(TrainConfig(epochs=1, warmup_epochs=1), 1))
    poly = TrainConfig(epochs=10, schedule="poly", poly_power=0.9)
    assert [lr_factor(poly, e) for e in (0, 5, 10)] == pytest.approx([1, 0.5**0.9, 0])


def test_weight_decay_exemption():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = make_optimizer(model, TrainConfig(no_decay_norm_bias=True, weight_decay=5e-4))
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3])] and decay["weight_decay"] == 5e-4
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
    assert len(make_optimizer(model, TrainConfig()).param_groups) == 1


def test_triangular_schedule_of_the_sgd_fast_recipe():
    cfg = make_config("cifar10-fast-sgd")
    assert lr_factor(cfg, 0) == pytest.approx(0.2) and lr_factor(cfg, 2.3) == pytest.approx(1.0)
    assert lr_factor(cfg, 10) == pytest.approx(0.07) and lr_factor(cfg, 6.15) == pytest.approx(0.535)


def test_norm_lr_multiplier_keeps_the_decay_per_step():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=True), torch.nn.BatchNorm2d(4))
    opt = make_optimizer(model, TrainConfig(norm_lr_mult=64, weight_decay=1e-3))
    assert sorted(g["lr_mult"] for g in opt.param_groups) == [1.0, 64.0]
    norm = next(g for g in opt.param_groups if g["lr_mult"] == 64)
    conv = next(g for g in opt.param_groups if g["lr_mult"] == 1)
    assert {id(p) for p in norm["params"]} == {id(p) for p in model[1].parameters()}
    assert norm["lr_mult"] * norm["weight_decay"] == pytest.approx(conv["weight_decay"])


def test_lookahead_restarts_from_a_slow_average_and_ends_on_it():
    model = torch.nn.Linear(2, 1, bias=False)
    lookahead = Lookahead(model, every=2, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.update(model, 1, 4)  # not a lookahead step
    torch.testing.assert_close(model.weight, start + 1)
    lookahead.update(model, 2, 4)  # d = 0.5 * (2 / 4) ** 3 = 1 / 16
    torch.testing.assert_close(model.weight, start + 15 / 16)
    torch.testing.assert_close(lookahead.state_dict()["weight"], start + 15 / 16)
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.update(model, 4, 4)  # the end: the model takes the slow weights
    torch.testing.assert_close(model.weight, start + 15 / 16)


def test_the_whitening_bias_trains_at_the_norm_rate_then_freezes():
    net = resnets.create_model("fastplain8", num_classes=10)
    cfg = TrainConfig(model="fastplain8", lr=1.0, norm_lr_mult=64, weight_decay=0.01, whiten_bias_epochs=3,
                      optimizer="muon", momentum=0.85, nesterov=True)
    opt = make_optimizer(net, cfg)
    own = [g for g in opt.param_groups if "lr_until" in g]
    assert len(own) == 1 and own[0]["params"] == [net.whiten.bias] and own[0]["lr_mult"] == 64
    assert own[0]["weight_decay"] == pytest.approx(0.01 / 64)
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in net.parameters()])
    set_lr(opt, 1.0, factor=0.5, epoch=1.5)  # halfway through its 3 epochs: half its peak, whatever the rest's
    assert own[0]["lr"] == pytest.approx(32) and {g["lr"] for g in opt.param_groups if g is not own[0]} == \
        {0.5 * g["lr_mult"] for g in opt.param_groups if g is not own[0]}
    set_lr(opt, 1.0, factor=0.5, epoch=3.2)  # then frozen
    bias, head = net.whiten.bias.detach().clone(), net.get_classifier().weight.detach().clone()
    net(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    opt.step()
    assert net.whiten.bias.grad.abs().sum() > 0 and torch.equal(net.whiten.bias, bias)
    assert not torch.equal(net.get_classifier().weight, head)


def test_the_whitening_bias_schedule_needs_a_whitening_stem():
    with pytest.raises(ConfigError, match="whitening stem"):
        make_optimizer(resnets.create_model("resnet20"), TrainConfig(whiten_bias_epochs=3))
    with pytest.raises(ConfigError, match="whiten_bias_epochs"):
        TrainConfig(whiten_bias_epochs=-1)
