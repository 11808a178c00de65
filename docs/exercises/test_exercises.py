"""Every exercise's checks: the reference solution passes them and the starter file (with its TODOs) does not, so
neither can rot. The checks compare with this library's own modules, which are tested against torchvision/timm."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnets
from resnets.models import BasicBlock, BlockOptions, Bottleneck, make_shortcut
from resnets.models.layers import PadShortcut

HERE = Path(__file__).resolve().parent


def _load(kind: str, name: str):
    spec = importlib.util.spec_from_file_location(f"{kind}_{name}", HERE / kind / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_batch_norm(ex) -> None:
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w, b = torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64)
    mine = (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    ref = (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    y = ex.batch_norm_train(x, w, b, *mine, momentum=0.1)
    expected = F.batch_norm(x, *ref, w, b, training=True, momentum=0.1)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(mine[0], ref[0])
    torch.testing.assert_close(mine[1], ref[1])
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    (grad_ref,) = torch.autograd.grad(expected, x, g)
    torch.testing.assert_close(grad, grad_ref)  # autograd through the statistics, as the library's


def _same_outputs(mine: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    assert list(mine.state_dict()) == list(reference.state_dict()), "the parameter names differ from torchvision's"
    reference.train()
    with torch.no_grad():  # random batch-norm statistics, so that eval mode tests them too
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
    mine.load_state_dict(reference.state_dict())
    for training in (True, False):
        mine.train(training)
        reference.train(training)
        torch.testing.assert_close(mine(x), reference(x))


def check_basic_block(ex) -> None:
    for in_chs, planes, stride in ((16, 16, 1), (16, 32, 2)):
        ref = BasicBlock(in_chs, planes, stride, make_shortcut("B", in_chs, planes, stride, nn.BatchNorm2d))
        _same_outputs(ex.MyBasicBlock(in_chs, planes, stride), ref, torch.randn(4, in_chs, 8, 8))


def check_bottleneck(ex) -> None:
    for in_chs, planes, stride in ((256, 64, 1), (64, 64, 1), (256, 128, 2)):
        out = planes * 4
        ref = Bottleneck(in_chs, planes, stride, make_shortcut("B", in_chs, out, stride, nn.BatchNorm2d),
                         BlockOptions())
        _same_outputs(ex.MyBottleneck(in_chs, planes, stride), ref, torch.randn(2, in_chs, 8, 8))


def check_option_a(ex) -> None:
    x = torch.randn(2, 16, 8, 8)
    for out_chs, stride in ((32, 2), (16, 1), (64, 4)):
        torch.testing.assert_close(ex.pad_shortcut(x, out_chs, stride), PadShortcut(out_chs, stride)(x))


def check_count_params(ex) -> None:
    for name, block, layers in (("resnet18", "basic", (2, 2, 2, 2)), ("resnet34", "basic", (3, 4, 6, 3)),
                                ("resnet50", "bottleneck", (3, 4, 6, 3)), ("resnet101", "bottleneck", (3, 4, 23, 3)),
                                ("resnet152", "bottleneck", (3, 8, 36, 3))):
        for classes in (1000, 10):
            expected = sum(p.numel() for p in resnets.create_model(name, num_classes=classes).parameters())
            assert ex.resnet_params(block, layers, classes) == expected, (name, classes)


def check_drop_path(ex) -> None:
    branch = torch.ones(20_000, 2, 3, 3)
    assert torch.equal(ex.drop_path(branch, 0.3, training=False), branch)
    out = ex.drop_path(branch, 0.3, training=True, generator=torch.Generator().manual_seed(0))
    per_sample = out.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == per_sample[:, :1]).all(1))  # all or nothing
    kept = (per_sample[:, 0] != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.02 and torch.allclose(per_sample[per_sample[:, 0] != 0], torch.tensor(1 / 0.7))
    assert abs(out.mean().item() - 1.0) < 0.03  # the expectation is unchanged


def check_paper_schedule(ex) -> None:
    for it, lr in ((0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001), (63_999, 0.001)):
        assert ex.paper_lr(it) == pytest.approx(lr), it
    assert ex.paper_lr(0, warmup=True) == pytest.approx(0.01) and ex.paper_lr(399, warmup=True) == pytest.approx(0.01)
    assert ex.paper_lr(400, warmup=True) == pytest.approx(0.1)


def check_gradient_norms(ex) -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for name in ("resnet20", "plain20"):
        model = resnets.create_model(name)
        norms = ex.conv_grad_norms(model, images, labels)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(norms) == len(convs) == 19
        assert norms == pytest.approx([c.weight.grad.norm().item() for c in convs])
        model.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        assert norms == pytest.approx([c.weight.grad.norm().item() for c in convs], rel=1e-4)


def check_zero_init(ex) -> None:
    for name in ("resnet18", "resnet50"):
        model = resnets.create_model(name).eval()
        ex.zero_init_last_bn(model)
        for block in (m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))):
            x = torch.randn(1, block.conv1.in_channels, 8, 8)
            with torch.no_grad():
                shortcut = x if block.downsample is None else block.downsample(x)
                torch.testing.assert_close(block(x), torch.relu(shortcut))  # the block starts as its shortcut


def check_mcnemar(ex) -> None:
    from resnets.analysis.stats import paired_accuracy

    # resnets eval resnet20_cifar10 --against resnet56_cifar10 on CIFAR-10's test set: 235 and 372 discordant
    a = [True] * 9014 + [True] * 235 + [False] * 372 + [False] * 379
    b = [True] * 9014 + [False] * 235 + [True] * 372 + [False] * 379
    generator = torch.Generator().manual_seed(0)
    coins = torch.rand(2, 300, generator=generator) < torch.tensor([[0.8], [0.75]])
    for first, second in ((a, b), (b, a), (coins[0].tolist(), coins[1].tolist()), ([True, False], [True, False])):
        reference = paired_accuracy(first, second)
        only_a, only_b, p = ex.mcnemar(first, second)
        assert (only_a, only_b) == (reference.only_a, reference.only_b)
        assert p == pytest.approx(reference.mcnemar_p, rel=1e-6)


EXERCISES = {
    "ex01_batch_norm": check_batch_norm, "ex02_basic_block": check_basic_block, "ex03_bottleneck": check_bottleneck,
    "ex04_option_a": check_option_a, "ex05_count_params": check_count_params, "ex06_drop_path": check_drop_path,
    "ex07_paper_schedule": check_paper_schedule, "ex08_gradient_norms": check_gradient_norms,
    "ex09_zero_init": check_zero_init, "ex10_mcnemar": check_mcnemar,
}


def test_every_exercise_has_a_starter_a_solution_and_checks():
    for kind in ("starters", "solutions"):
        assert sorted(p.stem for p in (HERE / kind).glob("ex*.py")) == sorted(EXERCISES)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_the_solution_passes(name):
    EXERCISES[name](_load("solutions", name))


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_the_starter_does_not_pass_yet(name):
    with pytest.raises((NotImplementedError, AssertionError)):
        EXERCISES[name](_load("starters", name))
