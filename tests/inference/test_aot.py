"""Ahead-of-time compilation is paid once: the package is cached by what decides the code, and reloaded."""
import copy

import pytest
import torch
from torch import nn

import resnets
from resnets.files import cache_dir
from resnets.inference import aot, prepare_inference

pytestmark = pytest.mark.precision  # in the ISA tier (tests/test_isa_tier.py)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def test_key_follows_weights_shape_and_format():
    net = tiny()
    key = aot.package_key(net, (3, 32, 32), torch.float32)
    assert aot.package_key(copy.deepcopy(net), (3, 32, 32), torch.float32) == key  # same network, same key
    assert aot.package_key(net, (3, 64, 64), torch.float32) != key
    assert aot.package_key(net, (3, 32, 32), torch.bfloat16) != key
    assert aot.package_key(net, (3, 32, 32), torch.float32, salt=b"calibration") != key
    changed = copy.deepcopy(net)
    with torch.no_grad():
        changed[0].weight[0, 0, 0, 0] += 1e-3
    assert aot.package_key(changed, (3, 32, 32), torch.float32) != key


@pytest.mark.slow
def test_compiled_once_then_loaded(monkeypatch):
    net, x = tiny(), torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
    first = aot.aot_runner(net, torch.float32)
    torch.testing.assert_close(first(x), ref, rtol=1e-4, atol=1e-5)
    packages = list((cache_dir() / "compiled").glob("*.pt2"))
    assert len(packages) == 1 and not list((cache_dir() / "compiled").glob(".*"))  # no partial file left

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compile)
    again = aot.aot_runner(copy.deepcopy(net), torch.float32)  # a new process would do the same
    torch.testing.assert_close(again(x[:1]), ref[:1], rtol=1e-4, atol=1e-5)  # any batch size, one package
    torch.testing.assert_close(again(x.repeat(3, 1, 1, 1)), ref.repeat(3, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_mode_of_a_resnet_runs_from_the_cache(monkeypatch):
    model, x = resnets.create_model("resnet20").eval(), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    prepare_inference(model, "compile")(x)
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", lambda *a, **k: pytest.fail("recompiled"))
    y = prepare_inference(model, "compile")(x)
    assert ((y - ref).abs().max() / ref.abs().max()).item() <= 1e-4


@pytest.mark.slow
def test_the_default_mode_picks_up_a_package_compiled_once(monkeypatch, engines):
    import resnets.inference.modes as inference
    from resnets.engine.evaluate import _runner

    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": False)
    engines(onnxruntime=False, openvino=False)
    model, x = resnets.create_model("resnet20").eval(), torch.randn(2, 3, 32, 32)
    assert _runner(model, "auto", torch.device("cpu"), x[:1])[1] == "fused"
    prepare_inference(model, "compile")(x)  # one run in the compiled mode pays the compilation
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", lambda *a, **k: pytest.fail("recompiled"))
    run, mode = _runner(model, "auto", torch.device("cpu"), x[:1])
    assert mode == "compile"
    torch.testing.assert_close(run(x), prepare_inference(model, "fused")(x), rtol=1e-4, atol=1e-4)
