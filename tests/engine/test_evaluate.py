"""Evaluation and prediction from a training checkpoint."""
import json

import pytest
import torch
from PIL import Image

import resnets
from resnets import DataError, ResnetsError
from resnets.engine.metrics import classification_metrics, format_metrics


def test_metrics_by_hand():
    logits = torch.tensor([[2.0, 1, 0], [0, 2, 1], [0, 2, 1], [1, 0, 2]])
    labels = torch.tensor([0, 1, 2, 2])
    m = classification_metrics(logits, labels, ["a", "b", "c"], "test")
    assert m.top1 == 75.0 and m.top5 == 100.0
    assert m.confusion == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert [c.precision for c in m.per_class] == [1.0, 0.5, 1.0]
    assert [c.recall for c in m.per_class] == [1.0, 1.0, 0.5]
    assert m.per_class[1].f1 == pytest.approx(2 / 3)
    assert "top-1 75.00%" in format_metrics(m)


def test_evaluate_matches_the_training_report(tree_run, tmp_path):
    tree, best, result = tree_run
    m = resnets.evaluate(best, str(tree), split="test", out=tmp_path)
    assert m.top1 == pytest.approx(result.test.top1) and m.n == 36
    assert (tmp_path / "confusion_test.png").is_file()
    saved = json.loads((tmp_path / "metrics_test.json").read_text())
    assert len(saved["per_class"]) == 3 and saved["split"] == "test"
    assert resnets.evaluate(best, split="val").n == 6  # the checkpoint's own data and split
    assert resnets.evaluate(best, split="test", tta_flip=True).n == 36
    resnets.evaluate(best, split="test", tta_flip=True, tta_translate=True, out=tmp_path / "tta")
    assert json.loads((tmp_path / "tta" / "metrics_test.json").read_text())["tta_translate"] is True


def test_evaluate_on_data_with_other_classes_is_a_clear_error(tree_run, tmp_path):
    from tests.conftest import make_image_tree

    _, best, _ = tree_run
    other = make_image_tree(tmp_path / "other", classes=("a", "b"), per_class=4)
    with pytest.raises(ResnetsError, match=r"trained on 3 classes \(cat, dog, fox\), but the data has 2"):
        resnets.evaluate(best, str(other))


def test_predictor_classifies_files_bytes_and_pil(tree_run):
    tree, best, result = tree_run
    predictor = resnets.Predictor(best)
    files = sorted((tree / "test" / "dog").iterdir())[:4]
    out = predictor.predict(files, topk=2)
    assert len(out) == 4 and all(len(top) == 2 for top in out)
    assert all(top[0][1] >= top[1][1] and top[0][1] + top[1][1] <= 1 + 1e-6 for top in out)
    from_bytes = predictor.predict([files[0].read_bytes()], topk=2)[0]
    assert [c for c, _ in from_bytes] == [c for c, _ in out[0]]
    assert [p for _, p in from_bytes] == pytest.approx([p for _, p in out[0]], abs=1e-5)
    pil = predictor.predict([Image.open(files[0])], topk=2)[0]
    assert [c for c, _ in pil] == [c for c, _ in out[0]]
    for one in (files[0], str(files[0]), files[0].read_bytes()):  # a single image, not a sequence of them
        assert [c for c, _ in predictor.predict(one, topk=2)[0]] == [c for c, _ in out[0]]
    if result.test.top1 >= 90:
        assert sum(top[0][0] == "dog" for top in out) >= 3


def test_predictor_names_an_unreadable_file(tree_run, tmp_path):
    _, best, _ = tree_run
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot read image .*bad.jpg: not a recognised image file"):
        resnets.Predictor(best).predict([bad])
    with pytest.raises(DataError, match="cannot read image .*missing.png: No such file or directory$"):
        resnets.Predictor(best).predict(str(tmp_path / "missing.png"))  # named whole, not letter by letter
    with pytest.raises(DataError, match=f"^cannot read image {bad}: not a recognised image file$"):
        resnets.Predictor(best).load(bad)  # (PIL's own error names a BytesIO object)
    with pytest.raises(DataError, match="^cannot read image the given image: not a recognised image file$"):
        resnets.Predictor(best).load(b"nope")
    with pytest.raises(DataError, match="a Tensor, not a path.*predict_tensor"):
        resnets.Predictor(best).predict([torch.zeros(3, 32, 32, dtype=torch.uint8)])


def test_predictor_resizes_any_image(tree_run):
    _, best, _ = tree_run
    top = resnets.Predictor(best).predict([Image.new("RGB", (300, 120), (0, 200, 0))], topk=1)[0]
    assert top[0][0] in ("cat", "dog", "fox")


@pytest.mark.precision
def test_compare_modes_measures_each_mode_against_float32(tree_run, tmp_path):
    from resnets.inference.modes import get_mode
    from resnets.engine.evaluate import compare_modes, format_modes

    _, best, result = tree_run
    rows = compare_modes(best, ["fused", "bf16", "int8"], split="test", calibration=16, out=tmp_path)
    assert [r.mode for r in rows] == ["eager", "fused", "bf16", "int8"]
    eager = rows[0]
    assert eager.top1 == pytest.approx(result.test.top1) and eager.top1_delta == 0 and eager.agreement == 100
    for r in rows[1:]:
        assert r.top1_delta == pytest.approx(r.top1 - eager.top1)
        assert 0 < r.max_rel_diff <= get_mode(r.mode).tolerance, r.mode  # each within its number format's tolerance
        assert 0 <= r.agreement <= 100
    assert rows[1].agreement == 100  # folding batch norm in float32 changes no prediction
    saved = json.loads((tmp_path / "modes_test.json").read_text())
    assert saved["images"] == 36 and saved["calibration_images"] == 16 and len(saved["modes"]) == 4
    assert "int8" in format_modes(rows) and "delta" in format_modes(rows)


@pytest.mark.precision
def test_evaluate_runs_the_onnx_modes_with_calibration_from_the_training_split(tree_run):
    _, best, _ = tree_run
    fused = resnets.evaluate(best, split="test")
    for mode in ("onnxruntime", "int8"):  # exported on (and int8 calibrated on) training images
        m = resnets.evaluate(best, split="test", mode=mode)
        assert m.n == 36 and abs(m.top1 - fused.top1) <= 100 * 3 / 36  # at most 3 of 36 images change class


@pytest.mark.slow
@pytest.mark.precision
def test_evaluate_runs_pytorch_int8_calibrated_on_the_training_split(tree_run, caplog):
    from resnets.inference import torchao_available

    if not torchao_available():
        pytest.skip("torchao is not installed (pip install torchao)")
    _, best, _ = tree_run
    fused = resnets.evaluate(best, split="test")
    with caplog.at_level("WARNING", logger="resnets"):
        m = resnets.evaluate(best, split="test", mode="compile_int8")
    # This network, trained for moments, has logits of about 80 with gaps of 0.01-0.1 between them for a third
    # of its images: 8 bits can move them (how many depends on the CPU's kernels). Never silently.
    assert m.n == 36
    assert abs(m.top1 - fused.top1) <= 100 * 5 / 36 or "margins are too small for 8 bits" in caplog.text


def test_compare_modes_refuses_an_unknown_mode(tree_run):
    from resnets.engine.evaluate import compare_modes

    _, best, _ = tree_run
    with pytest.raises(ResnetsError, match="unknown inference mode fp8"):
        compare_modes(best, ["fp8"])


@pytest.mark.slow
@pytest.mark.precision
def test_a_server_sized_workload_compiles_once(tree_run, caplog):
    import math

    from resnets.inference.modes import fastest_mode, get_mode

    _, best, _ = tree_run
    twin = get_mode(fastest_mode()).twin
    if twin is None:
        pytest.skip(f"{fastest_mode()} is the fastest mode on this machine: it has no compiled twin")
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    fused = resnets.Predictor(best, mode="fused").predict_tensor(images, topk=3)
    assert resnets.Predictor(best, images=100).mode == fastest_mode()  # a few images: compiling would not pay
    with caplog.at_level("INFO", logger="resnets"):
        served = resnets.Predictor(best, images=math.inf)
    assert served.mode == twin and f"running in {twin}" in caplog.text
    assert resnets.Predictor(best).mode == twin  # compiled once: every later run takes the package up
    tol = 1e-2 if twin == "compile_bf16" else 1e-5
    for a, f in zip(served.predict_tensor(images, topk=3), fused):
        assert [c for c, _ in a] == [c for c, _ in f] and [p for _, p in a] == pytest.approx([p for _, p in f], abs=tol)


@pytest.mark.precision
def test_auto_modes_give_the_float32_predictions(tree_run, monkeypatch, caplog):
    from resnets.inference import fastest_mode, get_mode

    _, best, _ = tree_run
    assert resnets.evaluate(best, split="test").top1 == resnets.evaluate(best, split="test", mode="fused").top1
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    fused = resnets.Predictor(best, mode="fused").predict_tensor(images, topk=3)
    auto = resnets.Predictor(best, mode="auto")
    assert auto.mode == fastest_mode() and resnets.Predictor(best, mode="fused").mode == "fused"
    tol = 1e-2 if get_mode(fastest_mode()).number_format == "bfloat16" else 1e-5
    for a, f in zip(auto.predict_tensor(images, topk=3), fused):
        assert [c for c, _ in a] == [c for c, _ in f] and [p for _, p in a] == pytest.approx([p for _, p in f], abs=tol)
    # an export that fails leaves the predictor in PyTorch, with a warning
    import importlib

    evaluate = importlib.import_module("resnets.engine.evaluate")  # the package's ``evaluate`` is the function
    monkeypatch.setattr(evaluate, "fastest_mode", lambda device="cpu", **kwargs: "onnxruntime")
    real = evaluate.prepare_inference

    def failing(model, mode, example=None):
        if mode == "onnxruntime":
            raise RuntimeError("unsupported operator")
        return real(model, mode, example)

    monkeypatch.setattr(evaluate, "prepare_inference", failing)
    with caplog.at_level("WARNING", logger="resnets"):
        predictor = resnets.Predictor(best)
        fallback = predictor.predict_tensor(images, topk=3)
    assert "ONNX conversion failed (RuntimeError: unsupported operator)" in caplog.text and predictor.mode == "fused"
    assert [p for _, p in fallback[0]] == pytest.approx([p for _, p in fused[0]], abs=1e-6)


def test_an_empty_split_names_the_splits_there_are(tree_run):
    """A flat folder of classes is all test images: asking for its (empty) validation split is one line that
    names the splits it has, not a crash in the metrics."""
    from resnets.engine.evaluate import load_checkpoint_and_data, split_of

    tree, best, _ = tree_run
    loaded = load_checkpoint_and_data(best, str(tree / "test"))
    with pytest.raises(DataError, match=r"no images in a val split: choose one it has with --split: train \(36 "
                                        r"images\), test \(36 images\)"):
        split_of(loaded.dataset, "val")


def test_checkpoints_get_distinct_short_labels():
    from resnets.engine.evaluate import distinct_labels, source_label

    assert source_label("runs/x/resnet-56/best.pt") == "resnet-56"  # a run folder
    assert source_label("weights/plain56-s0.safetensors") == "plain56-s0"  # a file beside others
    assert source_label("resnet50.tv2_in1k") == "resnet50.tv2_in1k"  # a weights tag as given
    assert distinct_labels(["a/resnet56.safetensors", "a/plain56.safetensors"]) == ["resnet56", "plain56"]
    assert distinct_labels(["x/run/best.pt", "y/run/best.pt"]) == ["run (1)", "run (2)"]
