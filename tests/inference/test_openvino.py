"""OpenVINO as an inference engine: converted once and cached, float32 to float noise, int8 calibrated, the
same runner interface as every mode."""
import pytest
import torch

import resnets
from resnets.errors import ResnetsError
from resnets.inference import get_mode, prepare_inference
from resnets.inference import openvino as ov_backend
from resnets.machine import native_bf16

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'resnets[openvino]')")
pytestmark = pytest.mark.precision


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = resnets.create_model("resnet20").eval()
    with torch.no_grad():  # batch norm statistics of a trained network, not the identity of a fresh one
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    return model, torch.randn(6, 3, 32, 32)


def rel_diff(y, ref):
    return ((y - ref).abs().max() / ref.abs().max()).item()


def test_float32_agrees_and_takes_any_batch(model_and_images):
    model, x = model_and_images
    run = prepare_inference(model, "openvino")
    with torch.no_grad():
        for batch in (x, x[:1], x.repeat(3, 1, 1, 1)):
            y = run(batch)
            assert y.dtype == torch.float32 and rel_diff(y, model(batch)) <= get_mode("openvino").tolerance


def test_converted_once_then_taken_from_the_cache(model_and_images, monkeypatch):
    model, x = model_and_images
    path = ov_backend.converted_model(model, (3, 32, 32))
    assert path.is_file() and path.with_suffix(".bin").is_file()
    import openvino

    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    assert ov_backend.converted_model(model, (3, 32, 32)) == path
    with torch.no_grad():
        assert rel_diff(prepare_inference(model, "openvino")(x), model(x)) <= 1e-4
    changed = resnets.create_model("resnet20").eval()  # other weights: another file
    monkeypatch.undo()
    assert ov_backend.converted_model(changed, (3, 32, 32)) != path


def test_throughput_hint_splits_the_batch_in_order(model_and_images):
    model, x = model_and_images
    latency = ov_backend.openvino_runner(model, hint="LATENCY")
    throughput = ov_backend.openvino_runner(model, hint="THROUGHPUT")
    torch.testing.assert_close(throughput(x), latency(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ResnetsError, match="hints LATENCY, THROUGHPUT"):
        ov_backend.openvino_runner(model, hint="FAST")


@pytest.mark.skipif(not native_bf16(), reason="bfloat16 is not native on this CPU")
def test_bfloat16_within_its_format(model_and_images):
    model, x = model_and_images
    with torch.no_grad():
        y = prepare_inference(model, "openvino_bf16")(x)
        assert 0 < rel_diff(y, model(x)) <= get_mode("openvino_bf16").tolerance


def test_int8_is_calibrated_and_refuses_other_sizes(model_and_images):
    model, x = model_and_images
    calibration = torch.randn(32, 3, 32, 32)
    run = prepare_inference(model, "openvino_int8", calibration)
    with torch.no_grad():
        assert 0 < rel_diff(run(x), model(x)) <= get_mode("openvino_int8").tolerance
    with pytest.raises(ResnetsError, match="calibrated on 3x32x32 images, got 3x40x40"):
        run(torch.randn(1, 3, 40, 40))
    with pytest.raises(resnets.ConfigError, match="needs an example input"):
        prepare_inference(model, "openvino_int8")


def test_without_openvino_one_clear_error(model_and_images, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(ResnetsError, match=r"pip install 'resnets\[openvino\]'"):
        ov_backend.openvino_runner(model_and_images[0])


def test_a_saved_network_keeps_its_metadata_and_runs_from_its_file(model_and_images, tmp_path):
    model, x = model_and_images
    ir = ov_backend.to_openvino(model, (3, 32, 32))
    meta = {"classes": ["cat", "dog"], "mean": [0.5, 0.4, 0.3], "input_size": 32}
    ov_backend.set_ir_metadata(ir, meta)
    path = tmp_path / "net.xml"
    ov_backend.save_ir(ir, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.bin", "net.xml"]  # no partial files left
    assert ov_backend.ir_metadata(path) == meta
    with torch.no_grad():
        for batch in (x, x[:1]):  # any batch size
            assert rel_diff(ov_backend.ir_runner(path)(batch), model(batch)) <= 1e-4
    with pytest.raises(ResnetsError, match="name it net.xml"):
        ov_backend.check_ir_name(tmp_path / "net.bin")


def test_int8_calibration_reads_every_part_of_a_set_ordered_by_class(model_and_images, monkeypatch):
    import nncf

    seen = {}

    def record(model, dataset, subset_size, **kwargs):
        seen["images"] = [torch.from_numpy(a) for a in dataset.get_inference_data()][:subset_size]
        return model

    monkeypatch.setattr(nncf, "quantize", record)
    ordered = torch.arange(600.0)[:, None, None, None].expand(600, 3, 32, 32)  # image i is all i: "class" i // 60
    ov_backend._quantize(ov_backend.to_openvino(model_and_images[0], (3, 32, 32)), ordered)
    values = [int(a[0, 0, 0, 0]) for a in seen["images"]]
    assert len(values) == ov_backend.SUBSET and values[0] == 0 and values[-1] == 599
    assert {v // 60 for v in values} == set(range(10))  # every tenth of the set, not only the first half


def test_a_classifier_is_described_for_openvinos_model_api(model_and_images):
    meta = {"classes": ["great white shark", "cat"], "mean": [0.5, 0.25, 0.125], "std": [0.2, 0.4, 1.0],
            "in_chans": 3}
    ir = ov_backend.to_openvino(model_and_images[0], (3, 32, 32))
    assert ov_backend.set_model_api_info(ir, meta)
    info = {k: v.astype(str) for k, v in ir.get_rt_info(["model_info"]).astype(dict).items()}
    assert info == {"model_type": "Classification", "labels": "great_white_shark cat",
                    "mean_values": "127.5 63.75 31.875", "scale_values": "51 102 255",
                    "reverse_input_channels": "True", "resize_type": "crop"}
    # not a classifier of RGB images: nothing written
    assert not ov_backend.set_model_api_info(ov_backend.to_openvino(model_and_images[0], (3, 32, 32)),
                                             {**meta, "in_chans": 1})
    dense = ov_backend.to_openvino(torch.nn.Conv2d(3, 2, 1).eval(), (3, 8, 8))  # one answer per pixel
    assert not ov_backend.set_model_api_info(dense, meta) and not dense.has_rt_info(["model_info"])
