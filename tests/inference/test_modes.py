"""Every inference mode agrees with the float32 baseline within its number format's tolerance."""
import pytest
import torch

import resnets
from resnets import ConfigError
from resnets.inference import MODES, REGISTRY, get_mode, onnxruntime_available, prepare_inference
from resnets.machine import native_bf16

pytestmark = pytest.mark.precision  # in the ISA tier (tests/test_isa_tier.py)

FAST_MODES = [m for m in MODES if not get_mode(m).compiles]


@pytest.fixture(scope="module")
def model_and_input():
    torch.manual_seed(0)
    return resnets.create_model("resnet20").eval(), torch.randn(4, 3, 32, 32)


@pytest.mark.parametrize("mode", FAST_MODES)
def test_mode_agrees_with_float32(model_and_input, mode):
    if not get_mode(mode).installed():
        pytest.skip(f"{get_mode(mode).engine} is not installed")
    if not get_mode(mode).runs_on("cpu", emulated_bf16=True):
        pytest.skip(f"{mode} needs native bfloat16")
    model, x = model_and_input
    with torch.no_grad():
        ref = model(x)
    y = prepare_inference(model, mode, x)(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert ((y - ref).abs().max() / ref.abs().max()).item() <= max(get_mode(mode).tolerance, 1e-6)
    assert torch.equal(y.argmax(1), ref.argmax(1)) or get_mode(mode).number_format != "float32"


@pytest.mark.slow
def test_compiled_mode_agrees(model_and_input):
    model, x = model_and_input
    with torch.no_grad():
        ref = model(x)
    y = prepare_inference(model, "compile", x)(x)
    assert ((y - ref).abs().max() / ref.abs().max()).item() <= get_mode("compile").tolerance


def test_dynamic_batch_in_onnxruntime(model_and_input):
    if not onnxruntime_available():
        pytest.skip("onnxruntime is not installed")
    model, x = model_and_input
    run = prepare_inference(model, "onnxruntime", x)
    with torch.no_grad():
        torch.testing.assert_close(run(x[:1].repeat(7, 1, 1, 1)), model(x[:1].repeat(7, 1, 1, 1)),
                                   rtol=1e-4, atol=1e-4)


def test_modes_leave_the_model_alone(model_and_input):
    model, x = model_and_input
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_inference(model, "bf16", x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32


def test_unknown_mode():
    with pytest.raises(ConfigError, match="unknown inference mode"):
        prepare_inference(resnets.create_model("resnet20"), "int4")


def test_native_bf16_is_a_bool():
    assert isinstance(native_bf16(), bool)


def test_available_modes_follow_the_machine(monkeypatch, engines):
    import resnets.inference.modes as inference

    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": False)
    assert not any("bf16" in m for m in inference.available_modes())
    assert {"bf16", "compile_bf16"} <= set(inference.available_modes(emulated_bf16=True))
    assert not any(m.startswith("compile") for m in inference.available_modes(compile=False))
    assert ("int8" in inference.available_modes()) == onnxruntime_available()
    assert not any(REGISTRY[m].cpu_only for m in inference.available_modes("cuda"))  # ONNX Runtime, OpenVINO
    engines(openvino=True)
    assert "openvino_bf16" not in inference.available_modes(emulated_bf16=True)  # its hint would run float32
    assert {"openvino", "openvino_int8"} <= set(inference.available_modes(compile=False))
    engines(openvino=False)
    assert not any(m.startswith("openvino") for m in inference.available_modes())


def test_a_bf16_only_mode_is_refused_where_bf16_is_not_native(monkeypatch):
    import resnets.inference.modes as inference

    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": False)
    # OpenVINO's bf16 hint runs float32 there (or fails to compile where oneDNN is capped): one clear line
    with pytest.raises(ConfigError, match="openvino_bf16 mode needs a CPU with native bfloat16.*openvino"):
        prepare_inference(resnets.create_model("resnet20"), "openvino_bf16")
    assert prepare_inference(resnets.create_model("resnet20"), "bf16")(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("ort", [True, False])
@pytest.mark.parametrize("ov", [True, False])
def test_fastest_mode_follows_the_machine(monkeypatch, engines, native, ort, ov):
    import resnets.inference.modes as inference

    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": native)
    engines(onnxruntime=ort)
    engines(openvino=ov)
    # OpenVINO, then ONNX Runtime: the fastest float32 engines of the speed suite
    float32 = "openvino" if ov else "onnxruntime" if ort else "fused"
    bf16 = "openvino_bf16" if ov else "bf16"
    assert inference.fastest_mode("cpu") == (bf16 if native else float32)
    assert inference.fastest_mode("cpu", float32=True) == float32
    assert inference.fastest_mode("cuda", float32=True) == "fused"  # ONNX Runtime and OpenVINO: the CPU only
    assert inference.fastest_mode("cuda") == ("bf16" if native else "fused")


@pytest.mark.parametrize("native", [True, False])
def test_a_cached_compiled_package_takes_over_from_its_twin(monkeypatch, engines, model_and_input, native):
    import resnets.inference.modes as inference

    model, shape = model_and_input[0], (3, 32, 32)
    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": native)
    engines(onnxruntime=False)
    engines(openvino=False)
    base, twin = ("bf16", "compile_bf16") if native else ("fused", "compile")
    assert inference.fastest_mode("cpu", model=model, shape=shape) == base  # nothing compiled yet
    dtype = torch.bfloat16 if native else torch.float32
    net = inference._folded_net(model, dtype)
    package = inference.package_path(net, shape, dtype)
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_bytes(b"")  # what an earlier run in the compiled mode left
    assert inference.fastest_mode("cpu", model=model, shape=shape) == twin
    assert inference.fastest_mode("cpu", model=model, shape=(3, 64, 64)) == base  # another shape: not compiled
    assert inference.fastest_mode("cpu") == base  # without the model, nothing to look up
    assert inference.fastest_mode("cuda", model=model, shape=shape) in ("bf16", "fused")  # CUDA compiles anew
    engines(onnxruntime=True)
    assert inference.fastest_mode("cpu", float32=True, model=model, shape=shape) == "onnxruntime"  # still faster
    engines(openvino=True)
    assert inference.fastest_mode("cpu", model=model, shape=shape) == ("openvino_bf16" if native else "openvino")


def test_every_mode_is_one_record():
    from resnets.inference import WEIGHT_BYTES

    assert MODES == tuple(REGISTRY) and all(REGISTRY[m].name == m for m in MODES)
    assert {r.number_format for r in REGISTRY.values()} == set(WEIGHT_BYTES)
    assert [m for m in MODES if REGISTRY[m].calibrated] == ["int8", "compile_int8", "openvino_int8"]
    assert all(REGISTRY[m].number_format == "int8" and REGISTRY[m].example for m in MODES if REGISTRY[m].calibrated)
    assert [m for m in MODES if REGISTRY[m].number_format == "bfloat16"] == ["bf16", "compile_bf16", "openvino_bf16"]
    for mode in MODES:  # a compiled twin computes the same numbers
        twin = REGISTRY[mode].twin
        assert twin is None or (REGISTRY[twin].number_format == REGISTRY[mode].number_format
                                and REGISTRY[twin].compiles and not REGISTRY[mode].compiles)
    assert get_mode("openvino_int8").weight_bytes == 1 and get_mode("compile_bf16").weight_bytes == 2
    with pytest.raises(ConfigError, match="unknown inference mode 'int4'; expected one of eager"):
        get_mode("int4")


def test_enough_work_makes_compiling_pay(monkeypatch, engines, model_and_input):
    import math

    import resnets.inference.modes as inference

    model, shape = model_and_input[0], (3, 40, 40)  # a shape no other test compiles for
    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": True)
    engines(openvino=False)
    assert inference.fastest_mode("cpu", model=model, shape=shape, images=64) == "bf16"  # milliseconds of work
    assert inference.fastest_mode("cpu", model=model, shape=shape, images=math.inf) == "compile_bf16"  # a server
    assert inference.fastest_mode("cuda", model=model, shape=shape, images=math.inf) == "bf16"
    seconds = inference._seconds_for(inference._folded_net(model, torch.bfloat16), torch.bfloat16, shape, 64)
    assert 0 < seconds < inference.COMPILE_PAYS_AFTER_S
    monkeypatch.setattr(inference, "COMPILE_PAYS_AFTER_S", seconds / 100)  # a slower model: the same images pay
    assert inference.fastest_mode("cpu", model=model, shape=shape, images=64) == "compile_bf16"
