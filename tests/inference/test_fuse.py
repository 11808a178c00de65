"""Batch-norm folding."""
import pytest
import torch
from torch import nn

import resnets
from resnets.inference.fuse import fold_conv_bn, fuse_bn


def _randomise_norms(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


def test_fold_one_pair_with_and_without_conv_bias():
    for bias in (False, True):
        conv, bn = nn.Conv2d(3, 8, 3, padding=1, bias=bias), _randomise_norms(nn.Sequential(nn.BatchNorm2d(8)))[0]
        x = torch.randn(2, 3, 9, 9)
        with torch.no_grad():
            torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "seresnet50", "resnext50_32x4d", "resnet20", "plain20",
                                  "fastresnet8"])
def test_fused_model_equals_the_original_and_has_no_norms_left(name):
    model = _randomise_norms(resnets.create_model(name))
    fused = fuse_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert ((fused(x) - ref).abs().max() / ref.abs().max()) < 1e-5


def test_preact_norms_stay_and_outputs_still_match():
    model = _randomise_norms(resnets.create_model("preact_resnet110"))
    fused = fuse_bn(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))
