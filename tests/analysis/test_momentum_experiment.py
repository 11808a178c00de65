"""The momentum experiment: memory and time against depth, measured, beside the trained networks."""
import json

from resnets.analysis import momentum
from resnets.analysis.experiments import run_experiment

TINY = dict(data="digits", epochs=1, subset=48, batch_size=16, progress=False)


def test_the_invertible_backward_keeps_memory_flat_where_backprop_grows():
    # one step each in a fresh process; depths far enough apart that per-block activations dominate
    small, deep = (momentum.peak_mb("resnet", d, 16) for d in (20, 110))
    flat_small, flat_deep = (momentum.peak_mb("momentum", d, 16) for d in (20, 110))
    assert deep > 3 * small  # backprop keeps every block's activations: ~1 MiB a block here
    assert deep - small > 5 * (flat_deep - flat_small)  # the reversal keeps a few, whatever the depth


def test_the_momentum_experiment_writes_its_json_and_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(momentum, "QUICK", momentum.Scale(depths=(8, 14), batch=4))
    result = run_experiment("momentum", tmp_path, depths=(8,), quick=True, **TINY)
    assert [r["label"] for r in result["runs"]] == ["ResNet-8", "Momentum ResNet-8"]
    saved = json.loads((tmp_path / "momentum.json").read_text())
    assert saved["depths"] == [8, 14] and set(saved["peak_mb"]) == set(saved["seconds_per_step"]) == \
        {"resnet", "checkpointed", "momentum"}
    assert all(len(v) == 2 and min(v) > 0 for v in saved["seconds_per_step"].values())
    assert all(len(v) == 2 for v in saved["peak_mb"].values())
    assert [a["label"] for a in saved["accuracy"]] == ["ResNet-8", "Momentum ResNet-8"]
    assert (tmp_path / "momentum.png").stat().st_size > 10_000 and (tmp_path / "curves.png").exists()

