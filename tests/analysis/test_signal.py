"""Signal propagation at initialisation: the mathematics on small stacks, and the experiment's outputs."""
import json

import pytest
import torch

from resnets.analysis.signal import VARIANTS, Signal, build_stack, growth, measure, run_signal, signal_propagation
from resnets.cli import main
from resnets.errors import ConfigError


def _signal(name, depth=32, width=8):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    return measure(build_stack(VARIANTS[name], depth, width), x, y)


def test_growth_names_the_shape_of_a_curve():
    n = range(1, 33)
    assert growth(Signal([1.0 for _ in n], [], [])) == "flat"
    assert growth(Signal([float(i) for i in n], [], [])) == "linear"
    assert growth(Signal([2.0**i for i in n], [], [])) == "exponential growth"
    assert growth(Signal([0.5**i for i in n], [], [])) == "exponential decay"
    assert growth(Signal([1.0, float("inf")] * 16, [], [])) == "exploded"


def test_branches_that_start_at_zero_make_every_block_the_identity():
    s = _signal("pre_none_zero")
    assert s.variance == pytest.approx([s.variance[0]] * len(s.variance))
    assert s.grad_norm == pytest.approx([s.grad_norm[0]] * len(s.grad_norm))


def test_batch_norm_keeps_residual_growth_linear_and_without_it_the_stream_explodes():
    assert growth(_signal("pre_bn")) == "linear"
    pre = _signal("pre_bn")
    assert 0.3 < (pre.variance[-1] - pre.variance[0]) / 32 < 2  # each branch adds about the same amount
    assert growth(_signal("pre_none")) in ("exponential growth", "exploded")


def test_a_plain_stack_with_batch_norm_has_exploding_gradients_a_residual_one_does_not():
    plain, residual = _signal("plain_bn"), _signal("post_bn")
    assert plain.grad_norm[0] / plain.grad_norm[-1] > 100 * residual.grad_norm[0] / residual.grad_norm[-1]


def test_the_experiment_writes_its_figure_and_numbers(tmp_path):
    report = run_signal(tmp_path, quick=True, depths=(4, 8), log=lambda s: None)
    saved = json.loads((tmp_path / "signal.json").read_text())
    assert (tmp_path / "signal.png").stat().st_size > 10_000 and saved["depths"] == [4, 8]
    assert set(saved["summary"]) == set(VARIANTS) and len(saved["deepest"]["pre_bn"]["variance"]) == 9
    assert report["summary"]["pre_none_zero"]["grad_first_over_last"][8] == pytest.approx(1.0)
    assert saved["summary"]["pre_none_zero"]["grad_first_over_last"]["8"] == pytest.approx(1.0)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="known variants"):
        signal_propagation(depths=(8,), variants=("nope",))


@pytest.mark.slow
def test_the_quick_command(tmp_path, capsys):
    assert main(["experiment", "signal", "--quick", "--out", str(tmp_path)]) in (0, None)
    out = capsys.readouterr().out
    assert "signal.png" in out and (tmp_path / "signal.json").is_file()
