"""Gradient-flow analysis: the norms are measured per main-path layer and the outputs are written."""
import json
import math

import torch

import resnets
from resnets.analysis.gradients import analyze_gradients, conv_layers, gradient_norms


def test_conv_layers_follow_the_main_path():
    model = resnets.create_model("resnet20", shortcut="B")
    names = [n for n, _ in conv_layers(model)]
    assert len(names) == 19 and names[0] == "conv1" and not any("downsample" in n for n in names)


def test_gradient_norms_leave_the_weights_alone():
    model = resnets.create_model("plain20", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    norms = gradient_norms(model, [batch])
    assert len(norms) == 19 and all(n > 0 and math.isfinite(n) for n in norms)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


def test_analyze_gradients_end_to_end(tmp_path):
    summary = analyze_gradients(tmp_path, depth=8, data="digits", steps=2, batch_size=16, measure_batches=1)
    assert set(summary) == {"plain-8", "ResNet-8"}
    assert all(math.isfinite(s[m]["first_over_last"]) for s in summary.values() for m in ("init", "trained"))
    rows = (tmp_path / "gradients.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 and rows[0].count(",") == 4
    assert (tmp_path / "gradients.png").stat().st_size > 0
    assert json.loads((tmp_path / "gradients.json").read_text()) == json.loads(json.dumps(summary))
