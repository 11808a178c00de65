"""The ResNet strikes back and ResNet-RS recipes: what each sets, linear lr scaling, and a short streamed rsb-a3
run end to end on an ImageNet-style folder, in one process and under torchrun."""
import os
import subprocess
import sys

import pytest

import resnets
from conftest import make_image_tree
from resnets.engine.checkpoint import load_training_checkpoint
from resnets.engine.config import list_recipes


def test_the_recipes_are_listed_and_set_what_the_papers_say():
    assert {"rsb-a1", "rsb-a2", "rsb-a3", "resnetrs"} <= set(list_recipes())
    a1, a2, a3 = (resnets.make_config(f"rsb-{k}") for k in ("a1", "a2", "a3"))
    for cfg in (a1, a2, a3):
        assert (cfg.model, cfg.optimizer, cfg.loss, cfg.bce_target_thresh, cfg.batch_size) == \
            ("resnet50", "lamb", "bce", 0.2, 2048)
        assert cfg.no_decay_norm_bias and cfg.cutmix == 1.0 and cfg.test_size == 224 and cfg.test_crop_pct == 0.95
        assert cfg.schedule == "cosine" and cfg.warmup_epochs == 5 and cfg.rrc_scale == [0.08, 1.0]
    assert (a1.epochs, a1.lr, a1.weight_decay, a1.mixup, a1.aug_repeats, a1.crop_size) == (600, 5e-3, 0.01, 0.2, 3, 224)
    assert (a2.epochs, a2.lr, a2.weight_decay, a2.mixup, a2.aug_repeats) == (300, 5e-3, 0.02, 0.1, 3)
    assert a1.model_args == a2.model_args == {"drop_path_rate": 0.05} and a3.model_args == {}
    assert (a3.epochs, a3.lr, a3.weight_decay, a3.mixup, a3.aug_repeats, a3.crop_size) == (100, 8e-3, 0.02, 0.1, 1, 160)
    assert a1.randaugment.startswith("rand-m7-mstd0.5") and a3.randaugment.startswith("rand-m6-mstd0.5")
    rs = resnets.make_config("resnetrs")
    assert (rs.model, rs.label_smoothing, rs.weight_decay, rs.ema_decay, rs.model_args) == \
        ("resnetrs50", 0.1, 4e-5, 0.9999, {"drop_rate": 0.25})
    assert (rs.crop_size, rs.test_size, rs.epochs) == (160, 224, 350)


def test_the_learning_rate_scales_linearly_with_the_batch(tmp_path):
    from resnets.engine.train import setup

    tree = make_image_tree(tmp_path / "tree", per_class=4, size=40, fmt="jpg")
    small = dict(data=str(tree), model="resnet18", crop_size=32, test_size=40, randaugment=None, epochs=1,
                 out=str(tmp_path / "run"), progress=False, tensorboard=False, workers=0, aug_repeats=1)
    run = setup(resnets.make_config("rsb-a3", batch_size=256, **small))
    assert run.lr == pytest.approx(8e-3 * 256 / 2048)


def _rsb_a3(tree, out, nproc):
    # the recipe as published, made small: a tiny folder of 48-pixel photos, crops of 32 tested at 40
    args = ["train", "--recipe", "rsb-a3", "--data", str(tree), "--crop-size", "32", "--test-size", "40",
            "--batch-size", "8", "--epochs", "1", "--workers", "1", "--stream", "--no-progress", "--no-tensorboard",
            "--precision", "fp32", "--out", str(out), "--nproc", str(nproc)]
    done = subprocess.run([sys.executable, "-m", "resnets", *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return load_training_checkpoint(out / "last.pt"), done


@pytest.mark.slow  # a ResNet-50, streamed, and a torchrun job
def test_rsb_a3_runs_streamed_in_one_process_and_under_torchrun(tmp_path):
    tree = make_image_tree(tmp_path / "tree", per_class=12, size=48, fmt="jpg")
    for nproc in (1, 2):
        ckpt, done = _rsb_a3(tree, tmp_path / f"run{nproc}", nproc)
        cfg = ckpt["config"]
        assert (cfg["optimizer"], cfg["loss"], cfg["randaugment"], cfg["model"]) == \
            ("lamb", "bce", "rand-m6-mstd0.5-inc1", "resnet50")
        assert ckpt["test_size"] == 40 and ckpt["step"] >= 1 and "best epoch" in done.stdout
