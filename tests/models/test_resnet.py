"""The uniform model API and the architecture options of ``ResNet``."""
import pytest
import torch
from torch import nn

import resnets
from resnets.models import DropPath, PadShortcut, SqueezeExcite
from resnets.models.layers import global_avg_pool


def test_forward_is_features_then_head():
    model = resnets.create_model("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 512, 2, 2)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 512)


def test_reset_classifier():
    model = resnets.create_model("resnet50").eval()
    model.reset_classifier(17)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 17)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


@pytest.mark.parametrize("name,strides,channels", [("resnet50", [2, 4, 8, 16, 32], [64, 256, 512, 1024, 2048]),
                                                    ("resnet20", [1, 1, 2, 4], [16, 16, 32, 64]),
                                                    ("resnetv2_50", [2, 4, 8, 16, 32], [64, 256, 512, 1024, 2048])])
def test_feature_extraction_follows_timms_numbering(name, strides, channels):
    """Index 0 is the stem's output (before its pool), 1..N the stages', as timm's features_only."""
    size = 64
    extractor = resnets.create_model(name, features_only=True)
    feats = extractor(torch.randn(1, 3, size, size))
    assert [size // f.shape[-1] for f in feats] == strides == extractor.feature_info.reduction()
    assert [f.shape[1] for f in feats] == channels == extractor.feature_info.channels()
    some = resnets.create_model(name, features_only=True, out_indices=(1, 2))
    assert some.feature_info.channels() == channels[1:3] and some.feature_info.module_name() == ["layer1", "layer2"]
    out = some(torch.randn(1, 3, size, size))
    assert len(out) == 2 and out[1].shape == feats[2].shape


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet110", "fastresnet8"])
def test_grad_checkpointing_gives_the_same_gradients_and_running_statistics(name):
    torch.manual_seed(0)
    a = resnets.create_model(name)
    b = resnets.create_model(name)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 32, 32)
    for _ in range(2):  # the recomputation must not count a batch twice in the batch-norm statistics
        a(x).sum().backward()
        b(x).sum().backward()
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=k)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    norms = [(ma, mb) for ma, mb in zip(a.modules(), b.modules()) if isinstance(mb, nn.BatchNorm2d)]
    assert all(mb.num_batches_tracked.item() == 2 and mb.momentum == ma.momentum for ma, mb in norms)


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_shortcut_options_a_b_c():
    a = resnets.create_model("resnet20", shortcut="A")
    b = resnets.create_model("resnet20", shortcut="B")
    c = resnets.create_model("resnet20", shortcut="C")
    plain = resnets.create_model("plain20")
    assert _count(a, PadShortcut) == 2 and not any("downsample" in k for k in a.state_dict())
    assert sum(1 for k in b.state_dict() if k.endswith("downsample.0.weight")) == 2  # only where shape changes
    assert sum(1 for k in c.state_dict() if k.endswith("downsample.0.weight")) == 9  # every block
    assert all(blk.downsample is None for stage in plain.stages for blk in stage)
    counts = [sum(p.numel() for p in m.parameters()) for m in (a, b, c)]
    assert counts[0] < counts[1] < counts[2]


def test_option_a_pads_zeros_and_subsamples():
    x = torch.randn(1, 16, 8, 8)
    y = PadShortcut(32, 2)(x)
    assert y.shape == (1, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert (y[:, 16:] == 0).all()


@pytest.mark.parametrize("op", [PadShortcut(32, 2), global_avg_pool, SqueezeExcite(16)], ids=["pad", "pool", "se"])
def test_channels_last_gradients_stay_channels_last(op):
    """Mixed memory formats in the backward pass take slow paths: behind these layers, a channels-last
    activation gets a channels-last gradient (slicing's and mean's gradients come back channels-first)."""
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = op(torch.relu(x))
    (grad,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous()


def test_global_avg_pool_is_the_spatial_mean():
    x = torch.randn(3, 8, 7, 5, dtype=torch.float64)
    assert torch.equal(global_avg_pool(x), x.mean((2, 3)))
    assert torch.equal(global_avg_pool(x, keepdim=True), x.mean((2, 3), keepdim=True))


def test_plain_block_has_no_identity_path():
    model = resnets.create_model("plain20").eval()
    for stage in model.stages:
        for blk in stage:
            nn.init.zeros_(blk.bn2.weight)
            nn.init.zeros_(blk.bn2.bias)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert (feats == 0).all()  # a zeroed residual branch with no shortcut passes nothing


def test_zero_init_last_makes_blocks_identity():
    model = resnets.create_model("resnet20", zero_init_last=True).eval()
    blk = model.layer1[1]
    x = torch.relu(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(blk(x), x)
    pre = resnets.create_model("preact_resnet110", zero_init_last=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(pre.layer2[3](x.repeat(1, 2, 1, 1)), x.repeat(1, 2, 1, 1))


def test_stochastic_depth_rate_rises_linearly():
    model = resnets.create_model("resnet56", drop_path_rate=0.5)
    rates = [blk.drop_path.p if isinstance(blk.drop_path, DropPath) else 0.0 for s in model.stages for blk in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5)
    steps = [b - a for a, b in zip(rates, rates[1:])]
    assert max(steps) == pytest.approx(min(steps))


def test_drop_path_drops_whole_samples_in_training_only():
    dp = DropPath(0.5).train()
    y = dp(torch.ones(1000, 4, 2, 2))
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6
    x = torch.randn(3, 4)
    assert torch.equal(dp.eval()(x), x)


def test_stride_in_1x1_is_resnet_v1():
    v15 = resnets.create_model("resnet50")
    v1 = resnets.create_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v1(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_se_resnet_and_resnext_and_wide():
    se = resnets.create_model("seresnet50")
    assert _count(se, SqueezeExcite) == 16 and se.layer1[0].se.fc1.out_channels == 16
    rx = resnets.create_model("resnext50_32x4d")
    assert rx.layer1[0].conv2.groups == 32 and rx.layer1[0].conv2.in_channels == 128
    wide = resnets.create_model("wide_resnet50_2")
    assert wide.layer1[0].conv2.in_channels == 128


def test_resnet_d_stem_and_avg_down():
    model = resnets.create_model("resnet50d")
    assert isinstance(model.conv1, nn.Sequential) and model.conv1[6].out_channels == 64
    ds = model.layer2[0].downsample
    assert isinstance(ds[0], nn.AvgPool2d) and ds[1].stride == (1, 1)


def test_preact_has_a_final_norm_and_bare_projections():
    model = resnets.create_model("preact_resnet164")
    assert model.bn1 is None and isinstance(model.norm, nn.BatchNorm2d)
    assert isinstance(model.layer1[0].downsample, nn.Conv2d)


def test_bad_options_are_clear_errors():
    with pytest.raises(resnets.ConfigError, match="shortcut"):
        resnets.create_model("resnet20", shortcut="D")
    with pytest.raises(resnets.ConfigError, match="basic blocks"):
        resnets.create_model("resnet18", groups=32)
    with pytest.raises(resnets.ConfigError, match="drop_path_rate must be in \\[0, 1\\), got 0.0 and 1.5"):
        resnets.create_model("resnet20", drop_path_rate=1.5)  # the rate given, not a block's share of it
    with pytest.raises(resnets.ConfigError, match="in_chans"):
        resnets.create_model("resnet20", in_chans=0)


@pytest.mark.parametrize("size", [32, 57, 100])
def test_any_input_size_down_to_32(size):
    model = resnets.create_model("resnet50", num_classes=3)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 3)


def test_model_pickles_and_deepcopies():
    import copy
    import pickle

    model = resnets.create_model("resnet20")
    clone = pickle.loads(pickle.dumps(model))
    copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), model.eval()(x))


def test_highway_block_with_closed_gates_carries_its_input_and_with_open_gates_is_plain():
    import torch.nn as nn

    from resnets.models import BasicBlock, HighwayBlock

    x = torch.rand(2, 16, 8, 8)  # the output of a ReLU: non-negative
    closed = HighwayBlock(16, 16, 1, nn.Identity(), gate_bias=-100.0).eval()
    torch.testing.assert_close(closed(x), x)  # T = 0: the block is its shortcut, the identity
    opened = HighwayBlock(16, 16, 1, nn.Identity(), gate_bias=100.0).eval()
    plain = BasicBlock(16, 16, 1, None).eval()
    plain.load_state_dict({k: v for k, v in opened.state_dict().items() if not k.startswith("gate.")})
    torch.testing.assert_close(opened(x), plain(x))  # T = 1: only the transform, no carry
    assert 0 < HighwayBlock(16, 16, 1, nn.Identity())(x).min() + 1 and closed.openness < 1e-6


def test_highway_networks_are_resnets_with_gates():
    highway, residual = resnets.create_model("highway20"), resnets.create_model("resnet20")
    gates = sum(p.numel() for n, p in highway.named_parameters() if ".gate." in n)
    assert sum(p.numel() for p in highway.parameters()) == sum(p.numel() for p in residual.parameters()) + gates
    with pytest.raises(resnets.ConfigError, match="needs a shortcut"):
        resnets.create_model("highway20", shortcut=None)
