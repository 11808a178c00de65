"""The ODE view: Euler stages (the mathematics on small cases) and the experiment."""
import json

import pytest
import torch

import resnets
from resnets.analysis.experiments import run_experiment
from resnets.errors import ConfigError
from resnets.models.ode import EulerStage

TINY = dict(data="digits", epochs=1, subset=48, batch_size=16, progress=False)


def test_a_short_horizon_is_the_identity_and_more_steps_converge():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    stage = EulerStage(8, steps=4, horizon=1e-6).eval()
    torch.testing.assert_close(stage(x), x, atol=1e-5, rtol=0)  # h -> 0: x + h f(x) -> x
    flow = EulerStage(8, steps=4).eval()

    def at(steps):
        flow.steps = steps
        with torch.no_grad():
            return flow(x)

    coarse, fine, finer = (at(4) - at(8)).abs().max(), (at(64) - at(128)).abs().max(), (at(128) - at(256)).abs().max()
    assert finer < fine < coarse and finer < 0.6 * fine  # Euler's error halves with the step


def test_tied_networks_change_steps_untied_ones_cannot():
    tied, untied = resnets.create_model("odenet20"), resnets.create_model("eulernet20")
    assert sum(p.numel() for p in untied.parameters()) > 2 * sum(p.numel() for p in tied.parameters())
    tied.set_steps(8)
    assert tied(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ConfigError, match="untied"):
        untied.set_steps(8)


def test_the_ode_experiment_sweeps_the_steps(tmp_path):
    result = run_experiment("ode", tmp_path, **TINY)
    assert [r["model"] for r in result["runs"]] == ["odenet20", "eulernet20"]
    saved = json.loads((tmp_path / "ode.json").read_text())
    assert [r["steps"] for r in saved["tied"]] == [1, 2, 3, 4, 6, 8, 12, 16, 32]
    assert all(0 <= r["top1"] <= 100 for r in saved["tied"]) and (tmp_path / "ode.png").exists()
    assert "numbers of Euler steps" in (tmp_path / "report.md").read_text()


def test_sweeping_the_steps_of_another_network_is_refused_in_one_line(digits_resnet20):
    from resnets.analysis.ode import steps_sweep

    with pytest.raises(ConfigError, match="holds a ResNet: sweeping the Euler steps needs a weight-tied ODE network"):
        steps_sweep(digits_resnet20, steps=(1,))
