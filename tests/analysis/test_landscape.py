"""Loss landscapes: the mathematics on tiny cases (filter normalisation, power iteration against an exact
Hessian, interpolation end points, batch statistics) and the experiment end to end on the digits."""
import copy
import json
import math

import pytest
import torch
from torch import nn

from resnets import ConfigError
from resnets.analysis.landscape import (Landscape, filter_normalized, interpolation, moved, random_direction,
                                        run_landscape, surface, top_eigenvalue)
from resnets.cli import main
from resnets.models import create_model


def test_filter_normalisation_gives_each_filter_the_norm_of_the_weights_filter():
    weight = torch.randn(8, 4, 3, 3) * torch.arange(1, 9).view(8, 1, 1, 1)
    d = filter_normalized(torch.randn(8, 4, 3, 3), weight)
    assert torch.allclose(d.flatten(1).norm(dim=1), weight.flatten(1).norm(dim=1), rtol=1e-5)
    assert not torch.allclose(d, weight)
    assert torch.equal(filter_normalized(torch.randn(8), torch.randn(8)), torch.zeros(8))  # biases, BN: left out


def test_twins_of_equal_shapes_are_cut_along_the_same_raw_directions():
    plain = create_model("plain20", num_classes=10, layers=(1, 1, 1))
    residual = create_model("resnet20", num_classes=10, layers=(1, 1, 1))
    dp = random_direction(dict(plain.named_parameters()), seed=3)
    dr = random_direction(dict(residual.named_parameters()), seed=3)
    key = "layer2.0.conv1.weight"
    cos = torch.nn.functional.cosine_similarity(dp[key].flatten(1), dr[key].flatten(1))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)  # same direction, each filter scaled to its net
    assert all(not d.any() for k, d in dr.items() if "bn" in k)


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    a = torch.diag(torch.tensor([5.0, 2.0, -1.0, 0.5]))
    value, steps = top_eigenvalue(lambda p: 0.5 * p["w"] @ a @ p["w"], {"w": torch.randn(4)}, 200, tol=1e-7)
    assert value == pytest.approx(5.0, rel=1e-4) and steps < 200
    b = torch.diag(torch.tensor([-5.0, 2.0, 1.0, 0.5]))  # not at a minimum: the largest magnitude is negative
    value, _ = top_eigenvalue(lambda p: 0.5 * p["w"] @ b @ p["w"], {"w": torch.randn(4)}, 500, tol=1e-8)
    assert value == pytest.approx(2.0, rel=1e-3)


def test_power_iteration_agrees_with_the_exact_hessian_of_a_small_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    params = {k: p.detach() for k, p in net.named_parameters()}
    names = list(params)

    def loss(p):
        return nn.functional.cross_entropy(torch.func.functional_call(net, p, (x,)), y)

    def flat_loss(v):
        pieces = dict(zip(names, v.split([params[k].numel() for k in names])))
        return loss({k: pieces[k].view_as(params[k]) for k in names})

    exact = torch.linalg.eigvalsh(torch.func.hessian(flat_loss)(torch.cat([params[k].flatten() for k in names])))
    top = exact.max().item()
    value, _ = top_eigenvalue(loss, params, 500, tol=1e-7)
    assert value == pytest.approx(top, rel=1e-3)


def _land():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1))
    return model, Landscape(model, torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,)))


def test_points_use_the_batch_statistics_and_leave_the_model_alone():
    model, land = _land()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, accuracy = land.evaluate(land.params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    batch_stats = copy.deepcopy(model).train()  # batch norm normalising by the batch at hand
    with torch.no_grad():
        expected = nn.functional.cross_entropy(batch_stats(land.images), land.labels).item()
        with_running = nn.functional.cross_entropy(model.eval()(land.images), land.labels).item()
    assert loss == pytest.approx(expected, rel=1e-4) and loss != pytest.approx(with_running, rel=1e-2)
    assert 0 <= accuracy <= 100


def test_interpolation_ends_at_both_weights_and_the_surface_centre_is_the_trained_point():
    _, land = _land()
    start = {k: torch.randn_like(v) * 0.05 for k, v in land.params.items()}
    path = interpolation(land, start, land.params, [0.0, 0.5, 1.0])
    assert path["loss"][0] == pytest.approx(land.evaluate(start)[0], rel=1e-5)
    assert path["loss"][2] == pytest.approx(land.evaluate(land.params)[0], rel=1e-5)
    dirs = (random_direction(land.params, 0), random_direction(land.params, 1))
    grid = surface(land, land.params, dirs, [-1.0, 0.0, 1.0])
    assert len(grid["loss"]) == 3 and len(grid["loss"][0]) == 3
    assert grid["loss"][1][1] == pytest.approx(land.evaluate(land.params)[0], rel=1e-5)
    assert grid["loss"][0][2] == pytest.approx(land.evaluate(moved(land.params, dirs, (1.0, -1.0)))[0], rel=1e-5)


def test_the_experiment_trains_twins_and_writes_figures_and_numbers(tmp_path, capsys):
    args = ["experiment", "landscape", "--data", "digits", "--depth", "8", "--epochs", "1", "--subset", "64",
            "--batch-size", "16", "--images", "32", "--no-progress", "--out", str(tmp_path)]
    assert main(args) in (0, None)
    out = capsys.readouterr().out
    assert "top Hessian eigenvalue" in out and "landscape.png" in out
    report = json.loads((tmp_path / "landscape.json").read_text())
    assert [n["label"] for n in report["networks"]] == ["plain-8", "ResNet-8"]
    for n in report["networks"]:
        assert len(n["surface"]["loss"]) == 21 and len(n["surface"]["loss"][0]) == 21
        assert n["interpolation"]["alpha"][5] == 0.0 and n["interpolation"]["alpha"][15] == 1.0
        assert n["interpolation"]["loss"][15] == pytest.approx(n["loss"], rel=1e-4)
        assert n["surface"]["loss"][10][10] == pytest.approx(n["loss"], rel=1e-4)
        assert math.isfinite(n["top_hessian_eigenvalue"]) and n["hessian_products"] >= 2
    assert (tmp_path / "landscape.png").stat().st_size > 10_000 and (tmp_path / "interpolation.png").is_file()
    assert (tmp_path / "training" / "resnet-8" / "init.pt").is_file()

    (tmp_path / "training" / "plain-8" / "init.pt").unlink()  # a run trained without its starting weights
    with pytest.raises(ConfigError, match="no init.pt"):
        run_landscape(tmp_path, data="digits", depths=(8,), epochs=1, subset=64, images=32, progress=False)
