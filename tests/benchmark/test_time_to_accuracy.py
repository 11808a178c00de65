"""Time-to-accuracy summaries: mean and spread per recipe, and a changed setting paired with the recipe as is."""
import pytest
from tests.conftest import bench_script


@pytest.fixture(scope="module")
def tta():
    return bench_script("time_to_accuracy")


def _run(seed, top1, overrides=None):
    run = {"kind": "fast", "recipe": "cifar10-fast", "model": "fastplain8", "epochs": 8, "seed": seed,
           "test_top1": top1, "train_seconds": 400.0 + seed}
    return run | ({"overrides": overrides} if overrides else {})


def test_a_changed_setting_is_paired_with_the_recipe_as_is(tta):
    change = {"whiten_bias_epochs": 3}
    base = [94.0, 93.8, 94.2, 93.9]
    runs = {f"b{s}": _run(s, a) for s, a in enumerate(base)}
    runs |= {f"w{s}": _run(s, a + d, change) for s, (a, d) in enumerate(zip(base, [0.1, 0.3, 0.2, 0.2]))}
    runs["w9"] = _run(9, 95.0, change)  # a seed the recipe as is lacks: not paired
    summary = tta.summarize(runs)
    plain, changed = summary["fastplain8 8 epochs"], summary["fastplain8 8 epochs whiten_bias_epochs=3"]
    assert plain["seeds"] == [0, 1, 2, 3] and "against" not in plain
    assert plain["test_top1_mean"] == pytest.approx(93.975, abs=0.01)
    against = changed["against"]
    assert against["group"] == "fastplain8 8 epochs" and against["seeds"] == [0, 1, 2, 3]
    assert against["mean_difference"] == pytest.approx(0.2)
    assert 0.01 < against["t_test_p"] < 0.02  # t = 4.9 on 3 degrees of freedom
    assert tta.changes(change) == " whiten_bias_epochs=3" and tta.changes({}) == ""
    key = tta.run_key("fastplain8", 8, 0, False, overrides=change)  # the recorded runs' names stay as they were
    assert key == "fastplain8-e8-s0-whiten_bias_epochs3"
    assert tta._run_dir("fastplain8", 8, 0, False, overrides=change) == "runs/tta-" + key
    assert tta.run_key("fastplain8", 8, 0, True, "cifar10-fast-sgd") == "fastplain8-sgd-e8-s0-compile"


def test_one_shared_seed_is_not_a_comparison(tta):
    runs = {"b0": _run(0, 94.0), "w0": _run(0, 94.5, {"whiten_bias_epochs": 3})}
    assert "against" not in tta.summarize(runs)["fastplain8 8 epochs whiten_bias_epochs=3"]
