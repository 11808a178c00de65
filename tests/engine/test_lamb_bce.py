"""LAMB against the paper's equations computed independently in float64, binary cross-entropy against its
definition, and both through a training run."""
import math

import numpy as np
import pytest
import torch

import resnets
from resnets import ConfigError
from resnets.engine.loss import bce_loss, classification_loss
from resnets.engine.optim import Lamb


def _lamb_reference(w, grads, lr, b1, b2, eps, wd):
    """You et al. 2019, Algorithm 2, one tensor, in numpy float64."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        u = r + wd * w
        wn, un = np.linalg.norm(w), np.linalg.norm(u)
        ratio = wn / un if wd and wn > 0 and un > 0 else 1.0
        w = w - lr * ratio * u
    return w


@pytest.mark.parametrize("wd", [0.0, 0.02])
def test_lamb_follows_the_papers_equations(wd):
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=(7, 5)), [rng.normal(size=(7, 5)) for _ in range(6)]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = Lamb([p], lr=5e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=wd)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    expected = _lamb_reference(w0, grads, 5e-3, 0.9, 0.999, 1e-6, wd)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12, atol=1e-14)


def test_the_trust_ratio_makes_the_step_relative_to_the_weights():
    """With decay, every tensor moves by lr * ||w|| whatever the scale of its gradient (the first step)."""
    for scale in (1e-3, 1.0, 1e3):
        p = torch.nn.Parameter(torch.full((10,), 2.0, dtype=torch.float64))
        p.grad = torch.randn(10, dtype=torch.float64) * scale
        before = p.detach().clone()
        Lamb([p], lr=0.01, weight_decay=0.01).step()
        assert (p.detach() - before).norm().item() == pytest.approx(0.01 * before.norm().item(), rel=1e-9)


def test_bce_is_the_mean_binary_cross_entropy_of_every_class():
    torch.manual_seed(0)
    z, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2, 0])
    onehot = np.eye(4)[y.numpy()]

    def manual(t):
        s = 1 / (1 + np.exp(-z.numpy()))
        return -(t * np.log(s) + (1 - t) * np.log(1 - s)).mean()

    assert bce_loss(z, y).item() == pytest.approx(manual(onehot), rel=1e-12)
    smooth = onehot * 0.9 + 0.1 / 4
    assert bce_loss(z, y, smoothing=0.1).item() == pytest.approx(manual(smooth), rel=1e-12)
    mixed = torch.tensor(0.7 * onehot + 0.3 * np.roll(onehot, 1, axis=0))  # mixup of two images
    assert bce_loss(z, mixed).item() == pytest.approx(manual(mixed.numpy()), rel=1e-12)
    # timm's threshold 0.2: both mixed classes count as present
    assert bce_loss(z, mixed, target_thresh=0.2).item() == pytest.approx(manual((mixed.numpy() > 0.2) * 1.0), rel=1e-12)
    ce = classification_loss("ce", z, y).item()
    assert ce == pytest.approx(-np.log(np.exp(z.numpy())[range(6), y] / np.exp(z.numpy()).sum(1)).mean(), rel=1e-12)
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        classification_loss("hinge", z, y)


def test_lamb_and_bce_train_a_network(tmp_path):
    cfg = resnets.make_config("digits", model="resnet20", epochs=3, optimizer="lamb", lr=5e-3, weight_decay=0.01,
                              loss="bce", bce_target_thresh=0.2, mixup=0.2, no_decay_norm_bias=True,
                              out=str(tmp_path / "run"), progress=False, tensorboard=False)
    result = resnets.train(cfg)
    assert result.test.top1 > 40 and math.isfinite(result.history[-1]["train_loss"])  # chance is 10%


@pytest.mark.parametrize("kwargs, message", [({"optimizer": "adamw"}, "one of sgd, lamb"),
                                             ({"betas": [0.9]}, "two numbers in \\[0, 1\\)"),
                                             ({"bce_target_thresh": 1.5}, "in \\[0, 1\\)"), ({"loss": "mse"},
                                                                                             "one of ce, bce")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.make_config(None, **kwargs)
    with pytest.raises(ConfigError, match="LAMB needs lr >= 0"):
        Lamb([torch.nn.Parameter(torch.zeros(1))], lr=-1)
