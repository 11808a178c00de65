"""Training, evaluating and predicting with a segmentation network from the command line, on generated
image/mask folders in the real format: it learns, it resumes exactly, and bad input gets one line."""
import json

import numpy as np
import pytest
import torch
from conftest import make_mask_folder
from PIL import Image

from resnets.cli import main
from resnets.data.masks import encode_png, load_segmentation, read_mask, voc_palette
from resnets.engine.checkpoint import load_training_checkpoint

TRAIN = ["train", "--task", "segment", "--model", "fcn_resnet18", "--model-arg", "output_stride=16",
         "--model-arg", "aux_loss=true", "--batch-size", "8", "--lr", "0.02", "--schedule", "poly",
         "--no-tensorboard", "--no-progress", "--precision", "fp32"]


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    make_mask_folder(root / "data", n=48, size=48)
    assert main([*TRAIN, "--data", str(root / "data"), "--epochs", "8", "--out", str(root / "run")]) == 0
    return root


def test_the_head_learns_more_than_the_trivial_answer(seg_run):
    report = json.loads((seg_run / "run" / "report.json").read_text())
    data = load_segmentation(seg_run / "data")
    pixels = torch.cat([m.flatten() for m in data.val.masks])
    labelled = pixels[pixels != 255]
    background_iou = 100 * float((labelled == 0).float().mean())  # all background: IoU of class 0, 0 for the rest
    assert report["val"]["miou"] > background_iou / 3 + 15, report["val"]
    assert report["val"]["iou"]["2"] > 20 and report["best_epoch"] >= 1
    assert (seg_run / "run" / "curves.png").stat().st_size > 5000
    lines = (seg_run / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8 and {"val_miou", "train_miou", "val_pixel_acc"} <= json.loads(lines[0]).keys()


def test_eval_on_the_checkpoint_gives_the_reported_numbers(seg_run, capsys):
    assert main(["eval", str(seg_run / "run" / "best.pt"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    report = json.loads((seg_run / "run" / "report.json").read_text())
    assert shown["split"] == "val" and shown["miou"] == pytest.approx(report["val"]["miou"], abs=0.01)


def test_predict_writes_masks_of_class_indices_and_overlays(seg_run, capsys):
    image = seg_run / "data" / "images" / "0005.png"
    out = seg_run / "pred"
    assert main(["predict", str(seg_run / "run" / "best.pt"), str(image), "--out", str(out), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    mask = read_mask(out / "0005_mask.png")
    assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 1, 2}
    assert sum(line["classes"].values()) == pytest.approx(1, abs=1e-3)
    overlay = np.array(Image.open(out / "0005_overlay.png"))
    original = np.array(Image.open(image))
    assert overlay.shape == (48, 48, 3) and np.array_equal(overlay[mask == 0], original[mask == 0])


def test_predict_on_nothing_readable_is_an_error(seg_run, capsys):
    (seg_run / "notes.txt").write_text("not an image")
    assert main(["predict", str(seg_run / "run" / "best.pt"), str(seg_run / "notes.txt"),
                 "--out", str(seg_run / "none")]) == 2
    assert "none of the 1 input(s) could be read as an image" in capsys.readouterr().err
    assert not (seg_run / "none").exists()


def test_a_resumed_run_ends_with_the_same_weights(tmp_path):
    make_mask_folder(tmp_path / "data", n=16, size=32)
    args = [*TRAIN, "--data", str(tmp_path / "data"), "--epochs", "2"]
    main([*args, "--out", str(tmp_path / "straight")])
    main([*args, "--epochs", "1", "--out", str(tmp_path / "half")])
    last = load_training_checkpoint(tmp_path / "half" / "last.pt")
    last["config"]["epochs"] = 2  # as if stopped after its first epoch (whose lr was the same: poly starts at 1)
    torch.save(last, tmp_path / "half" / "last.pt")
    assert main(["train", "--resume", str(tmp_path / "half" / "last.pt")]) == 0
    a = load_training_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_training_checkpoint(tmp_path / "half" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra, message", [
    (["--model", "resnet18"], "resnet18 is a classifier: --task segment trains a segmentation network"),
    (["--mixup", "0.2"], "setting 'mixup' is for image classification"),
    (["--model-arg", "output_stride=32"], "output_stride must be 8 or 16, got 32"),
])
def test_bad_settings_get_one_line_and_exit_2(tmp_path, capsys, extra, message):
    make_mask_folder(tmp_path / "data", n=6, size=32)
    assert main([*TRAIN, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_bad_masks_get_one_line_and_exit_2(tmp_path, capsys):
    make_mask_folder(tmp_path / "data", n=6, size=32)
    (tmp_path / "data" / "classes.txt").write_text("background\nsquare\n")  # the discs are class 2
    assert main([*TRAIN, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds class 2, but there are 2 classes" in err and err.count("\n") == 0
    assert not (tmp_path / "run" / "last.pt").exists()


def test_eval_on_other_data_takes_the_checkpoints_classes(seg_run, tmp_path, capsys):
    make_mask_folder(tmp_path / "other", n=12, size=40, seed=5)
    for path in (tmp_path / "other" / "masks").iterdir():  # no discs here: indices 0 and 1 only
        mask = read_mask(path)
        mask[mask == 2] = 0
        path.write_bytes(encode_png(mask, voc_palette()))
    assert main(["eval", str(seg_run / "run" / "best.pt"), "--data", str(tmp_path / "other"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert list(shown["iou"]) == ["0", "1", "2"] and shown["iou"]["1"] is not None
    bad = tmp_path / "other" / "masks" / "0000.png"
    mask = read_mask(bad)
    mask[0, 0] = 5
    bad.write_bytes(encode_png(mask, voc_palette()))
    assert main(["eval", str(seg_run / "run" / "best.pt"), "--data", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds class 5, but there are 3 classes" in err and err.count("\n") == 0


def test_fine_tuning_on_other_classes_keeps_all_but_the_heads_last_layers(seg_run, tmp_path):
    make_mask_folder(tmp_path / "data", n=12, size=32)
    (tmp_path / "data" / "classes.txt").write_text("sky\nsquare\ndisc\nunseen\n")
    parent = seg_run / "run" / "best.pt"
    args = [*TRAIN, "--data", str(tmp_path / "data"), "--epochs", "1", "--lr", "1e-9", "--out", str(tmp_path / "run"),
            "--pretrained", str(parent)]
    assert main(args) == 0
    before, after = (load_training_checkpoint(p)["model"] for p in (parent, tmp_path / "run" / "last.pt"))
    assert after["classifier.4.weight"].shape[0] == 4 and before["classifier.4.weight"].shape[0] == 3
    assert torch.allclose(after["backbone.conv1.weight"], before["backbone.conv1.weight"], atol=1e-6)
    assert torch.allclose(after["aux_classifier.0.weight"], before["aux_classifier.0.weight"], atol=1e-6)
