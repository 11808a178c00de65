"""Muon for convolution filters and Nesterov SGD for the rest, checked against the equations step by step."""
import copy
import json
import math

import pytest
import torch
from torch import nn

import resnets
from resnets import ConfigError
from resnets.engine.optim import Muon, make_optimizer, muon_groups, orthogonalize, param_groups, set_lr


@pytest.mark.parametrize("shape", [(16, 144), (64, 24), (32, 32)])
def test_orthogonalize_gives_the_svds_direction_with_singular_values_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = orthogonalize(g, 5, torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh  # the exact answer, U V^T
    s = torch.linalg.svdvals(x)
    assert x.shape == g.shape and x.dtype == g.dtype
    assert 0.6 < s.min() and s.max() < 1.25  # the quintic leaves them near 1, not at 1
    assert (x * polar).sum() / (x.norm() * polar.norm()) > 0.97
    bf16 = orthogonalize(g.float(), 3, torch.bfloat16)
    assert bf16.dtype == torch.float32 and (bf16.double() * polar).sum() / (bf16.norm() * polar.norm()) > 0.9


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))

    def get_classifier(self):
        return self.fc


def _grads(net, seed):
    """The same made-up gradient for every copy of the network (a step is a function of its gradients)."""
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_filters_take_muon_steps_and_the_rest_sgds():
    torch.manual_seed(0)
    net = _Net()
    groups = muon_groups(param_groups(net, 0.01, False, norm_lr_mult=4.0), muon_lr_mult=0.5)
    assert [p for g in groups if g.get("orthogonal") for p in g["params"]] == [net.conv.weight]
    opt = Muon(groups, lr=0.1, momentum=0.8, nesterov=True, muon_momentum=0.6, ns_steps=5)
    ref = copy.deepcopy(net)
    sgd = torch.optim.SGD(param_groups(ref, 0.01, False, norm_lr_mult=4.0), lr=0.1, momentum=0.8, nesterov=True)
    set_lr(opt, 0.1)  # as training does: each group at lr x its lr_mult
    set_lr(sgd, 0.1)
    w, buf = net.conv.weight.detach().clone(), torch.zeros_like(net.conv.weight)
    for seed in range(3):
        _grads(net, seed)
        _grads(ref, seed)
        g = net.conv.weight.grad.clone()
        opt.step()
        sgd.step()
        buf = 0.6 * buf + g  # the filters: Nesterov momentum, renormalised weights, an orthogonalised step
        w = w * math.sqrt(8) / w.norm() - 0.05 * orthogonalize((g + 0.6 * buf).reshape(8, -1), 5).view_as(w)
        torch.testing.assert_close(net.conv.weight.detach(), w)
        for name in ("bn.weight", "bn.bias", "fc.weight", "fc.bias"):  # the rest: torch's SGD, to the bit
            assert torch.equal(net.get_parameter(name), ref.get_parameter(name)), name


def test_its_state_resumes_exactly():
    torch.manual_seed(0)
    a = _Net()
    opt_a = Muon(muon_groups(param_groups(a, 0.01, False), 1.0), lr=0.05, muon_momentum=0.9)
    for seed in range(2):
        _grads(a, seed)
        opt_a.step()
    b = copy.deepcopy(a)
    opt_b = Muon(muon_groups(param_groups(b, 0.01, False), 1.0), lr=0.05, muon_momentum=0.9)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for net, opt in ((a, opt_a), (b, opt_b)):
        _grads(net, 5)
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_the_recipe_option_builds_it_with_its_settings():
    cfg = resnets.make_config("cifar10-fast", data="x")
    assert (cfg.optimizer, cfg.muon_lr, cfg.muon_momentum, cfg.muon_ns_steps, cfg.batch_size) == \
        ("muon", 0.24, 0.6, 3, 2000)
    net = resnets.create_model(cfg.model)
    opt = make_optimizer(net, cfg)
    filters = [p for g in opt.param_groups if g["orthogonal"] for p in g["params"]]
    assert len(filters) == sum(p.ndim == 4 for p in net.parameters()) and all(p.ndim == 4 for p in filters)
    assert all(g["lr_mult"] == pytest.approx(0.24 / cfg.lr) for g in opt.param_groups if g["orthogonal"])


def test_muon_trains_a_network(tmp_path):
    cfg = resnets.make_config("digits", model="resnet20", epochs=3, optimizer="muon", muon_lr=0.05,
                              out=str(tmp_path / "run"), progress=False, tensorboard=False)
    result = resnets.train(cfg)
    assert result.test.top1 > 60 and math.isfinite(result.history[-1]["train_loss"])  # chance is 10%


@pytest.mark.parametrize("kwargs, message", [({"muon_momentum": 1.0}, "muon_momentum"),
                                             ({"muon_lr": 0.0}, "muon_lr"), ({"muon_ns_steps": 0}, "muon_ns_steps")])
def test_bad_muon_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.make_config(None, **kwargs)


def test_the_shipped_fast_recipe_trains_from_the_command_line(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "resnets", "train", "--recipe", "cifar10-fast", "--data", "digits",
                           "--subset", "400", "--epochs", "2", "--batch-size", "100", "--out", str(out),
                           "--no-progress", "--no-tensorboard"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    top1 = float(done.stdout.split("test top-1 ")[1].split("%")[0])
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["optimizer"] == "muon" and report["config"]["model"] == "fastplain8"
    assert report["val"] is None and top1 > 20  # 2 epochs on 400 digits; chance is 10%
