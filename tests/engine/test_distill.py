"""Knowledge distillation: Hinton's loss by hand, the teachers' inputs in their own normalisation, and
``resnets distill`` end to end, with one teacher and with an ensemble, and with a teacher that does not fit."""
import json

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.cli import main
from resnets.engine.checkpoint import load_training_checkpoint, save_checkpoint
from resnets.engine.distill import distillation_loss, load_teachers, soft_targets
from resnets.engine.batches import prepare_data

pytestmark = pytest.mark.precision  # in the ISA tier (tests/test_isa_tier.py)


def test_the_loss_is_hintons():
    student, teacher = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
    target = torch.randint(0, 5, (8,))
    probs = F.softmax(teacher / 3, dim=1)
    hard = distillation_loss(student, probs, target, temperature=3, alpha=0.0)
    assert torch.allclose(hard, F.cross_entropy(student, target))
    soft = distillation_loss(student, probs, target, temperature=3, alpha=1.0)
    (grad,) = torch.autograd.grad(soft, student)
    expected = 3 * (F.softmax(student / 3, dim=1) - probs) / 8  # T^2 * (q - p) / (T * batch)
    assert torch.allclose(grad, expected, atol=1e-6)
    same = distillation_loss(teacher, probs, target, temperature=3, alpha=1.0)
    assert same.abs() < 1e-6  # a student that already matches its teacher loses nothing


@pytest.fixture
def teacher(digits_resnet20):
    return digits_resnet20


def test_teachers_see_the_batch_in_their_own_normalisation(teacher, tmp_path):
    ckpt = load_training_checkpoint(teacher)
    moved = tmp_path / "moved.pt"
    save_checkpoint(moved, {**ckpt, "mean": [0.2], "std": [0.5]})  # as if trained on data of other statistics
    data = prepare_data(resnets.make_config("digits"))
    (t,) = load_teachers([str(moved)], data, torch.device("cpu"))
    raw = torch.rand(4, 1, 8, 8)
    student_x = (raw - data.mean[0]) / data.std[0]
    model, _ = resnets.engine.checkpoint.model_from_checkpoint(moved)
    with torch.no_grad():
        expected = model((raw - 0.2) / 0.5)
    assert torch.allclose(t.logits(student_x), expected, atol=0.15, rtol=0.05)  # bf16 or fused float32
    probs = soft_targets([t, t], student_x, 4.0)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)


def test_distill_trains_a_student_from_one_or_two_teachers(teacher, tmp_path, capsys):
    base = ["distill", "--student", "resnet20", "--model-arg", "layers=[1,1,1]", "--epochs", "1", "--no-progress",
            "--no-tensorboard"]
    assert main([*base, "--teacher", str(teacher), "--out", str(tmp_path / "one")]) in (0, None)
    assert "test top-1" in capsys.readouterr().out
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["config"]["teachers"] == [str(teacher)] and report["config"]["distill_alpha"] == 0.9
    assert main([*base, "--teacher", str(teacher), "--teacher", str(teacher), "--distill-temperature", "2",
                 "--out", str(tmp_path / "two")]) in (0, None)
    assert json.loads((tmp_path / "two" / "report.json").read_text())["config"]["teachers"] == [str(teacher)] * 2


def test_a_teacher_for_other_classes_is_refused(teacher, tmp_path, capsys):
    ckpt = load_training_checkpoint(teacher)
    five = tmp_path / "five.pt"
    model = {**ckpt["model"], "fc.weight": ckpt["model"]["fc.weight"][:5], "fc.bias": ckpt["model"]["fc.bias"][:5]}
    save_checkpoint(five, {**ckpt, "model": model, "classes": ckpt["classes"][:5]})
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(five), "--student", "resnet20", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "predicts 5 classes, the data has 10" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["distill", "--teacher", str(teacher), "--student", "resnet20", "--distill-alpha", "1.5",
                 "--out", str(out)]) == 2
    assert "'distill_alpha' must be in [0, 1]" in capsys.readouterr().err
