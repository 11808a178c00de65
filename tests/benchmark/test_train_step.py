"""The training-step benchmark's convolution parts: the right kernels, the right shapes, the right work."""
import torch
from torch import nn

import resnets
from tests.conftest import bench_script


def test_layer_shapes_know_which_gradients_a_training_step_needs():
    common = bench_script("common")
    net = resnets.create_model("fastplain8", num_classes=10).train()
    layers = list(common.layer_shapes(net, torch.randn(2, 3, 32, 32), grad=True).items())
    (whiten, shape), first = layers[0]
    assert whiten is net.whiten and shape == (2, 3, 32, 32)
    assert not first.input_grad and not first.weight_grad  # the images and the fixed whitening filters
    assert all(layer.input_grad and layer.weight_grad for _, layer in layers[1:])
    assert layers[1][1].flops == 2 * 2 * 64 * 24 * 9 * 31 * 31  # batch x out x in x 3x3 x output pixels
    inference = common.layer_shapes(net, torch.randn(2, 3, 32, 32))
    assert not any(layer.input_grad or layer.weight_grad for layer in inference.values())


def test_the_timed_kernels_are_the_convolutions_gradients():
    train_step = bench_script("train_step")
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(2, 16, 5, 5)
    parts = train_step.conv_parts(conv, x.detach(), g)
    out = conv(x)
    grad_input, grad_weight = torch.autograd.grad(out, (x, conv.weight), g)
    torch.testing.assert_close(parts["forward"](), out.detach())
    torch.testing.assert_close(parts["input_grad"](), grad_input)
    torch.testing.assert_close(parts["weight_grad"](), grad_weight)


def test_the_parts_add_up_to_the_steps_convolution_work():
    train_step = bench_script("train_step")
    record = train_step.convolutions("resnet20", 8, 32, torch.float32, peak=1e12, repeats=1)
    parts = record["parts"]
    first = 2 * 8 * 16 * 3 * 9 * 32 * 32 / 1e9  # the stem: its input is the images, which need no gradient
    assert parts["forward"]["gflop"] == parts["weight_grad"]["gflop"]
    assert abs(parts["forward"]["gflop"] - 2 * 8 * 40.55e6 / 1e9) < 0.002  # ResNet-20: 40.55 M MACs an image
    assert abs(parts["forward"]["gflop"] - parts["input_grad"]["gflop"] - first) <= 0.001
    assert abs(record["seconds"] - sum(p["seconds"] for p in parts.values())) < 1e-3
    assert all(0 < p["peak_share"] for p in parts.values())
