"""Export to ONNX / TorchScript / torch.export with metadata and a numerical check; int8 quantization."""
import json

import pytest
import torch

from resnets import ResnetsError
from resnets.cli import main
from resnets.deploy.export import FORMATS, TOLERANCE, export_checkpoint, exported_format, load_exported, read_metadata
from resnets.inference import onnxruntime_available
from resnets.inference.openvino import openvino_available
from resnets.engine.checkpoint import model_from_checkpoint

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime is not installed")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_ort), pytest.param("openvino", marks=needs_openvino),
                                 "torchscript", "exported-program"])
def test_export_round_trip(tree_run, tmp_path, fmt):
    tree, ckpt, _ = tree_run
    # the format is read from the contents, not the name (OpenVINO's must be X.xml: it finds X.bin by it)
    out = tmp_path / ("model.xml" if fmt == "openvino" else "model.bin")
    result = export_checkpoint(ckpt, fmt, out)
    assert result["max_abs_diff"] <= TOLERANCE and result["checked_batches"] == [2, 3]
    assert exported_format(out) == fmt
    meta = read_metadata(out)
    model, raw = model_from_checkpoint(ckpt)
    assert meta["classes"] == raw["classes"] == ["cat", "dog", "fox"]
    assert meta["mean"] == raw["mean"] and meta["input_size"] == 32 and meta["in_chans"] == 3
    x = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    with torch.no_grad():
        torch.testing.assert_close(load_exported(out)(x), model(x), rtol=0, atol=TOLERANCE)


def test_export_errors(tree_run, tmp_path):
    _, ckpt, _ = tree_run
    with pytest.raises(ResnetsError, match="unknown export format"):
        export_checkpoint(ckpt, "tflite", tmp_path / "m")
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    with pytest.raises(ResnetsError, match=r"m.onnx is named as onnx, but the format is torchscript: name it m.pt"):
        export_checkpoint(ckpt, "torchscript", tmp_path / "m.onnx")  # read back as ONNX it would fail
    assert not (tmp_path / "m.onnx").exists()
    assert export_checkpoint(ckpt, "torchscript", tmp_path / "m.ts", check=False)["path"] == str(tmp_path / "m.ts")


def test_export_cli_default_name(tree_run, tmp_path, capsys):
    _, ckpt, _ = tree_run
    local = tmp_path / "best.pt"
    local.write_bytes(ckpt.read_bytes())
    assert main(["export", str(local), "--format", "torchscript"]) in (0, None)
    assert (tmp_path / "best.pt").exists() and "max |difference|" in capsys.readouterr().out
    assert set(FORMATS) == {"onnx", "openvino", "torchscript", "exported-program", "safetensors"}


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_ort), pytest.param("openvino", marks=needs_openvino),
                                 "exported-program"])
def test_info_describes_an_exported_file(tree_run, tmp_path, capsys, fmt):
    from resnets.deploy.export import SUFFIX, describe_exported, exported_file

    _, ckpt, _ = tree_run
    out = tmp_path / f"model{SUFFIX[fmt]}"
    export_checkpoint(ckpt, fmt, out, check=False)
    assert exported_file(out) == fmt and exported_file(ckpt) is None  # a checkpoint is not taken for one
    assert main(["info", str(out)]) in (0, None)
    text = capsys.readouterr().out
    assert text == describe_exported(out) + "\n" and f"exported {fmt} file" in text
    assert "resnet20" in text and "3 classes (cat, dog, fox" in text and "3 x 32 x 32 float32 NCHW" in text
    # a damaged file: one line, exit 2
    out.write_bytes(out.read_bytes()[:100])
    assert main(["info", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnets info: error: cannot read") and str(out) in err and err.count("\n") == 1
    with pytest.raises(ResnetsError, match="it is empty, damaged or another kind of file"):
        read_metadata(out)  # the library's callers get the same one line, not the runtime's parse error


@pytest.mark.parametrize(("name", "fmt", "kind"), [("m.onnx", "onnx", "an ONNX file"),
                                                   ("m.xml", "openvino", "an OpenVINO network"),
                                                   ("m.pt2", "exported-program", "a torch.export program")])
@pytest.mark.parametrize("contents", [b"", b"garbage\n"])
def test_info_refuses_a_file_named_as_exported_that_holds_nothing(tmp_path, capsys, name, fmt, kind, contents):
    bad = tmp_path / name
    bad.write_bytes(contents)
    assert main(["info", str(bad)]) == 2  # neither described as an empty network nor read as a checkpoint
    err = capsys.readouterr().err
    assert err.startswith(f"resnets info: error: cannot read {bad} as {kind}: it is empty, damaged or another")
    assert err.count("\n") == 1 and err.rstrip().endswith(f"`resnets export CHECKPOINT --format {fmt}`")


@needs_openvino
def test_openvino_export_names_its_files_for_openvino(tree_run, tmp_path, capsys, monkeypatch):
    _, ckpt, _ = tree_run
    with pytest.raises(ResnetsError, match=r"an .xml file with its weights in a .bin beside it: name it m.xml"):
        export_checkpoint(ckpt, "openvino", tmp_path / "m.bin")  # the weights file would take its place
    assert not list(tmp_path.iterdir())
    local = tmp_path / "best.pt"
    local.write_bytes(ckpt.read_bytes())
    assert main(["export", str(local), "--format", "openvino"]) in (0, None)
    assert "best.xml (openvino, 3 classes)" in capsys.readouterr().out
    assert (tmp_path / "best.bin").stat().st_size > 1000

    import openvino

    def fails(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(openvino, "convert_model", fails)
    with pytest.raises(ResnetsError, match="openvino export failed: RuntimeError: unsupported operation"):
        export_checkpoint(ckpt, "openvino", tmp_path / "other.xml")
    assert not (tmp_path / "other.xml").exists()
    (tmp_path / "best.bin").unlink()  # the weights of an OpenVINO network travel beside it
    assert main(["info", str(tmp_path / "best.xml")]) == 2
    assert "best.xml is an OpenVINO network without its weights: best.bin must be beside it" in capsys.readouterr().err


def test_safetensors_weights_load_like_the_checkpoint(tree_run, tmp_path, monkeypatch):
    import resnets
    from resnets.models import loading

    tree, ckpt, _ = tree_run
    out = tmp_path / "weights" / "tiny_tree.safetensors"
    result = export_checkpoint(ckpt, "safetensors", out, extra={"test_top1": 50.0})
    assert result["max_abs_diff"] == 0
    assert resnets.evaluate(out, str(tree), split="val").top1 == resnets.evaluate(ckpt, str(tree), split="val").top1
    # shipped weights are found by name
    monkeypatch.setattr(loading, "WEIGHTS_DIR", out.parent)
    predictor = resnets.Predictor("tiny_tree", mode="fused")
    assert predictor.classes == ["cat", "dog", "fox"]
    top = predictor.predict(sorted((tree / "val").rglob("*.png"))[:2] or sorted(tree.rglob("*.png"))[:2], topk=2)
    assert len(top) == 2 and len(top[0]) == 2
    # a bare state dict in safetensors is not a described checkpoint: one clear error
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(ResnetsError, match="without a description"):
        resnets.Predictor(bare)


@needs_ort
def test_quantize_checkpoint(tree_run, tmp_path, capsys):
    from resnets.deploy.quantize import quantize_checkpoint

    _, ckpt, _ = tree_run
    out = tmp_path / "int8.onnx"
    report = quantize_checkpoint(ckpt, out, calibration=12, split="val")
    assert report["calibration_images"] == 12 and report["images"] == 6
    assert 0 <= report["int8"]["top1"] <= 100 and report["int8"]["images_per_s"] > 0
    assert report["top1_delta"] == pytest.approx(report["int8"]["top1"] - report["float32"]["top1"], abs=0.011)
    assert read_metadata(out)["quantization"].startswith("int8")
    assert json.loads(out.with_suffix(".json").read_text())["top1_delta"] == report["top1_delta"]
    # on real images (the calibration's distribution) the int8 model follows the float32 one closely
    from resnets.engine.evaluate import load_checkpoint_and_data

    loaded = load_checkpoint_and_data(ckpt)
    x = loaded.aug.eval(loaded.dataset.val.images)
    with torch.no_grad():
        ref = loaded.model(x)
    assert ((load_exported(out)(x) - ref).abs().max() / ref.abs().max()).item() < 0.2

    assert main(["quantize", str(ckpt), "--calibration", "0", "--out", str(tmp_path / "q.onnx")]) == 2
    assert "at least 1 image" in capsys.readouterr().err


@needs_openvino
def test_openvinos_model_api_runs_the_exported_file_on_raw_images(tree_run, tmp_path):
    pytest.importorskip("model_api", reason="OpenVINO's Model API is not installed (pip install openvino-model-api)")
    from model_api.adapters import OpenvinoAdapter, create_core
    from model_api.models import Model

    from resnets.engine.evaluate import load_checkpoint_and_data

    _, ckpt, _ = tree_run
    out = tmp_path / "model.xml"
    export_checkpoint(ckpt, "openvino", out)
    # in float32 (OpenVINO's default is bfloat16 where the CPU has it), so the answers can be compared exactly
    adapter = OpenvinoAdapter(create_core(), str(out), device="CPU", plugin_config={"INFERENCE_PRECISION_HINT": "f32"})
    classifier = Model.create_model(adapter)
    loaded = load_checkpoint_and_data(ckpt)
    images = loaded.dataset.val.images  # uint8 RGB, N x 3 x H x W
    with torch.no_grad():
        ours = loaded.model(loaded.aug.eval(images)).argmax(1).tolist()
    # Model API takes HWC images in OpenCV's channel order, BGR
    top = [classifier(img.permute(1, 2, 0).flip(-1).contiguous().numpy()).top_labels[0] for img in images]
    assert [int(label.id) for label in top] == ours
    assert [label.name for label in top] == [["cat", "dog", "fox"][i] for i in ours]


@needs_openvino
def test_quantize_for_openvino(tree_run, tmp_path, capsys):
    from resnets.deploy.quantize import quantize_checkpoint
    from resnets.engine.evaluate import load_checkpoint_and_data

    _, ckpt, _ = tree_run
    out = tmp_path / "best.int8.xml"
    report = quantize_checkpoint(ckpt, out, calibration=12, split="val", engine="openvino")
    assert report["engine"] == "openvino" and report["calibration_images"] == 12 and report["images"] == 6
    assert report["method"].startswith("NNCF") and report["int8"]["images_per_s"] > 0
    assert read_metadata(out)["quantization"].startswith("int8 static, NNCF")
    assert read_metadata(out)["classes"] == ["cat", "dog", "fox"]
    # the report beside it keeps its own name: quantizing for ONNX Runtime too (best.int8.json) loses neither
    assert json.loads((tmp_path / "best.int8.xml.json").read_text())["top1_delta"] == report["top1_delta"]
    assert report["size_mb"]["int8"] == round(((tmp_path / "best.int8.xml").stat().st_size
                                               + (tmp_path / "best.int8.bin").stat().st_size) / 2**20, 2)
    import openvino

    ops = {op.get_type_name() for op in openvino.Core().read_model(str(out)).get_ops()}
    assert "FakeQuantize" in ops  # int8 where OpenVINO runs it
    # the report describes the file written (how closely int8 follows float32: tests/inference/test_openvino.py)
    loaded = load_checkpoint_and_data(ckpt)
    val = loaded.dataset.val
    correct = (load_exported(out)(loaded.aug.eval(val.images)).argmax(1) == val.labels).float().mean().item()
    assert report["int8"]["top1"] == pytest.approx(100 * correct, abs=0.01)

    args = ["quantize", str(ckpt), "--engine", "openvino", "--out"]
    assert main([*args, str(tmp_path / "q.xml"), "--method", "entropy"]) == 2
    assert "calibrated by NNCF: leave them out" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "q.onnx")]) == 2
    assert "name it q.xml" in capsys.readouterr().err
    assert not (tmp_path / "q.xml").exists() and not (tmp_path / "q.onnx").exists()


@needs_ort
@pytest.mark.precision
def test_int8_weights_take_7_bits_where_the_cpu_would_saturate(tree_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    from resnets.deploy.quantize import quantize_checkpoint
    from resnets.machine import int8_saturates

    _, ckpt, _ = tree_run

    def widest_weight(reduce_range):
        out = tmp_path / f"{reduce_range}.onnx"
        report = quantize_checkpoint(ckpt, out, calibration=12, split="val", reduce_range=reduce_range)
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]  # the convolutions' kernels
        assert weights and report["weights"] in read_metadata(out)["quantization"]
        return report["weights"], max(int(abs(w.astype(int)).max()) for w in weights)

    assert widest_weight(True) == ("7-bit weights", 64)  # symmetric 7 bits: -64..63
    assert widest_weight(False) == ("8-bit weights", 127)
    assert widest_weight(None)[0] == ("7-bit weights" if int8_saturates() else "8-bit weights")
