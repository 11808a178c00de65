"""PyTorch's int8 path (compile_int8): calibrated, compiled once, then loaded; refused clearly where it cannot run."""
import pytest
import torch

import resnets
from resnets import ConfigError, ResnetsError
from resnets.inference import int8, prepare_inference, torchao_available
from resnets.inference.modes import TOLERANCE

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
    assert ((y - ref).abs().max() / ref.abs().max()).item() <= TOLERANCE["compile_int8"]
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


def test_without_torchao_one_clear_error(model_and_images, monkeypatch):
    import resnets.inference.modes as modes

    def missing():
        raise ImportError("No module named 'torchao'")

    monkeypatch.setattr(int8, "_quantizer", missing)
    model, x = model_and_images
    with pytest.raises(ResnetsError, match="needs torchao"):
        int8.quantize_pt2e(model, x)
    monkeypatch.setattr(modes, "torchao_available", lambda: False)
    assert "compile_int8" not in modes.available_modes()
    monkeypatch.setattr(modes, "torchao_available", lambda: True)
    assert "compile_int8" in modes.available_modes() and "compile_int8" not in modes.available_modes(compile=False)
    assert "compile_int8" not in modes.available_modes("cuda")
