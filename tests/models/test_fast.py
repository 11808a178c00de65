"""fastresnet8: the whitening stem, identity-initialised convolutions, fixed parameters, and the plain twin."""
import pytest
import torch

import resnets
from resnets.machine import native_bf16
from resnets.models.fast import BiasNorm, FastResNet


def test_whitening_stem_decorrelates_the_patches_of_its_data():
    g = torch.Generator().manual_seed(0)
    # correlated channels: one shared signal plus small independent noise
    base = torch.randn(64, 1, 16, 16, generator=g)
    images = base + 0.1 * torch.randn(64, 3, 16, 16, generator=g)
    model = FastResNet(in_chans=3)
    model.init_from_data(images, eps=0.0)
    half = model.whiten.weight.shape[0] // 2
    torch.testing.assert_close(model.whiten.weight[half:], -model.whiten.weight[:half])
    out = torch.nn.functional.conv2d(images, model.whiten.weight[:half])  # no bias: the whitened patches
    flat = out.permute(0, 2, 3, 1).reshape(-1, half).double()
    torch.testing.assert_close(flat.T @ flat / len(flat), torch.eye(half, dtype=torch.float64), atol=1e-4, rtol=0)


def test_convolutions_start_as_identity_and_the_residual_block_adds_its_input():
    model = resnets.create_model("fastresnet8").eval()
    block = model.layer2[1]
    x = torch.randn(2, 256, 7, 7)
    torch.testing.assert_close(block.conv(x), x)
    y = block(x)
    torch.testing.assert_close(y, x + torch.nn.functional.gelu(block.bn(x)))
    plain = resnets.create_model("fastplain8").eval()
    torch.testing.assert_close(plain.layer2[1](x), torch.nn.functional.gelu(plain.layer2[1].bn(x)))


def test_whitening_weights_and_norm_scales_never_train():
    model = resnets.create_model("fastresnet8", num_classes=5, in_chans=1)
    fixed = {id(p) for p in model.fixed_parameters()}
    assert id(model.whiten.weight) in fixed and model.whiten.out_channels == 8
    model.freeze(2)
    model.freeze(None)  # unfreezing everything leaves the fixed parameters alone
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) not in fixed), name
    assert all(not m.weight.requires_grad for m in model.modules() if isinstance(m, BiasNorm))
    assert model.get_classifier().bias is None and model.forward_features(torch.zeros(1, 1, 32, 32)).shape == (1, 256,
                                                                                                               3, 3)


def test_size_and_feature_info_follow_airbench94():
    model = resnets.create_model("fastresnet8")
    assert sum(p.numel() for p in model.parameters()) == 1_972_792  # airbench94's 1.97M parameters
    assert model.feature_info.channels() == [24, 64, 256, 256]  # the whitening stem (0), then the stages
    feats = model.forward_intermediates(torch.zeros(1, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [31, 15, 7, 3]


@pytest.mark.slow
@pytest.mark.skipif(not native_bf16(), reason="training compiles bfloat16 steps only where the CPU computes "
                                              "bfloat16 natively (AVX512-BF16 or AMX)")
def test_a_compiled_bfloat16_step_gives_the_eager_gradients():
    """torch.compile keeps bfloat16 activations in float32 inside fused kernels; the global max-pool's gradient
    must still find its maxima (it became NaN everywhere when the max was taken in bfloat16)."""
    torch.manual_seed(0)
    model = resnets.create_model("fastplain8").train()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    model.init_from_data(x)

    def gradient(forward, bf16):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            torch.nn.functional.cross_entropy(forward(x).float(), y).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    exact, eager = gradient(model, False), gradient(model, True)
    compiled = gradient(torch.compile(model), True)
    assert torch.isfinite(compiled).all()
    # as far from the float32 gradient as bfloat16 rounding puts the eager one (15% at this batch), no farther
    assert (compiled - exact).norm() <= 1.3 * (eager - exact).norm()
    assert compiled[:24].norm() >= 0.5 * exact[:24].norm()  # the stem's bias: the gradient reaches the input
