"""PyTorch's int8 path (compile_int8): calibrated, compiled once, then loaded; refused clearly where it cannot run."""
import copy

import pytest
import torch

import resnets
from resnets import ConfigError, ResnetsError
from resnets.inference import int8, modes, prepare_inference, torchao_available
from resnets.inference.modes import get_mode

pytestmark = pytest.mark.precision  # in the ISA tier (tests/test_isa_tier.py)

needs_torchao = pytest.mark.skipif(not torchao_available(), reason="torchao is not installed (pip install torchao)")


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    return resnets.create_model("resnet20").eval(), torch.randn(16, 3, 32, 32)


@needs_torchao
@pytest.mark.slow
def test_int8_agrees_with_float32_and_compiles_once(model_and_images, monkeypatch):
    model, x = model_and_images
    with torch.no_grad():
        ref = model(x)
    y = prepare_inference(model, "compile_int8", x)(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert ((y - ref).abs().max() / ref.abs().max()).item() <= get_mode("compile_int8").tolerance
    assert (y.argmax(1) == ref.argmax(1)).float().mean() >= 0.75
    # a second runner with the same network and calibration neither quantizes nor compiles again
    monkeypatch.setattr(int8, "quantize_pt2e", lambda *a: pytest.fail("quantized again"))
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", lambda *a, **k: pytest.fail("compiled again"))
    again = prepare_inference(model, "compile_int8", x)
    torch.testing.assert_close(again(x[:5]), y[:5], rtol=1e-5, atol=1e-5)  # any batch size, one package


@needs_torchao
def test_quantized_graph_holds_int8_operations(model_and_images):
    from resnets.inference.fuse import fuse_bn

    model, x = model_and_images
    graph = int8.quantize_pt2e(fuse_bn(model).to(memory_format=torch.channels_last), x)
    targets = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in t for t in targets) and any("dequantize_per_channel" in t for t in targets)


def test_another_image_size_is_refused_before_compiling(model_and_images, monkeypatch):
    model, x = model_and_images
    monkeypatch.setattr(int8, "quantize_pt2e", lambda *a: pytest.fail("quantized"))
    run = prepare_inference(model, "compile_int8", x)
    with pytest.raises(ResnetsError, match="calibrated on 3x32x32 images, got 3x64x64"):
        run(torch.randn(2, 3, 64, 64))


def test_calibration_is_needed(model_and_images):
    model, x = model_and_images
    with pytest.raises(ConfigError, match="needs an example input"):
        prepare_inference(model, "compile_int8")
    with pytest.raises(ResnetsError, match="at least one image"):
        prepare_inference(model, "compile_int8", x[:0])


def test_without_torchao_one_clear_error(model_and_images, monkeypatch, engines):
    import resnets.inference.modes as modes

    def missing():
        raise ImportError("No module named 'torchao'")

    monkeypatch.setattr(int8, "_quantizer", missing)
    model, x = model_and_images
    with pytest.raises(ResnetsError, match="needs torchao"):
        int8.quantize_pt2e(model, x)
    engines(compile_int8=False)
    assert "compile_int8" not in modes.available_modes()
    engines(compile_int8=True)
    assert "compile_int8" in modes.available_modes() and "compile_int8" not in modes.available_modes(compile=False)
    assert "compile_int8" not in modes.available_modes("cuda")


def _tied(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with classifier rows that differ by 1e-4 of their size: float32 still tells the classes apart,
    8-bit weights cannot."""
    torch.manual_seed(1)
    model = copy.deepcopy(model)
    fc = model.fc
    with torch.no_grad():
        fc.weight.copy_(torch.randn(1, fc.in_features) + 1e-4 * torch.randn(fc.out_features, fc.in_features))
        fc.bias.zero_()
    return model


def test_agreement_check_warns_only_when_int8_moves_the_answers(model_and_images, caplog):
    from resnets.inference.modes import check_agreement, int8_moved

    model, x = model_and_images
    with torch.no_grad():
        ref = model(x)
    same = lambda images: model(images) + 0.01  # noqa: E731
    flipped = lambda images: -model(images)  # noqa: E731
    assert int8_moved(model, same, x) == 0 and int8_moved(model, flipped, x) == 1
    with caplog.at_level("WARNING", logger="resnets"):
        torch.testing.assert_close(check_agreement(model, same, x, "int8")(x), ref + 0.01)
        assert caplog.text == ""
        run = check_agreement(model, flipped, x, "int8")
        torch.testing.assert_close(run(x), -ref)
        run(x)  # checked once
    assert caplog.text.count("\n") == 1 and "changes the top-1 class of 16 of 16 calibration images" in caplog.text


@pytest.mark.skipif(not modes.onnxruntime_available(), reason="onnxruntime is not installed")
def test_int8_of_a_network_with_tied_classes_says_so(model_and_images, caplog):
    model, x = model_and_images
    with caplog.at_level("WARNING", logger="resnets"):
        prepare_inference(_tied(model), "int8", x)(x)
    assert "margins are too small for 8 bits" in caplog.text


@pytest.mark.skipif(not modes.onnxruntime_available(), reason="onnxruntime is not installed")
def test_a_trained_network_on_real_images_keeps_its_answers_in_int8(caplog):
    """The shipped CIFAR-10 ResNet-20 on 200 original test images (tests/fixtures), calibrated on them: no
    warning, and top-1 within three images of float32 (a random network's margins are too small to ask this).
    On all 10,000 test images the int8 modes change 0.8-0.9% of its answers (top-1 -0.07 and -0.24 points with
    7-bit weights under the AVX2 cap), so about two of these 200 are expected to move."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "cifar10-test-200"
    fused = resnets.evaluate("resnet20_cifar10", str(folder), split="test", mode="fused")
    with caplog.at_level("WARNING", logger="resnets"):
        m = resnets.evaluate("resnet20_cifar10", str(folder), split="test", mode="int8")
    assert "margins" not in caplog.text and m.n == 200 and abs(m.top1 - fused.top1) <= 3 * 100 / 200
