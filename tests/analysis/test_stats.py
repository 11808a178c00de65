"""Statistics for comparisons (checked by hand and against scipy), ``resnets compare`` and ``resnets ensemble``."""
import json
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from resnets.analysis.compare import compare
from resnets.analysis.ensemble import ensemble
from resnets.analysis.stats import paired, paired_accuracy, summarize
from resnets.cli import main
from resnets.data.types import fold_indices
from resnets.engine import make_config
from resnets.engine.batches import prepare_data
from resnets.errors import ConfigError


def test_summary_is_mean_sample_std_and_a_t_interval():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.std == pytest.approx(math.sqrt(5 / 3))
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t(0.975, 3 degrees of freedom) * s / sqrt(n)
    assert s.ci95 == pytest.approx((2.5 - half, 2.5 + half))
    assert summarize([7.0]).ci95 == (7.0, 7.0)


def test_the_paired_t_test_by_hand_and_as_scipy_computes_it():
    a, b = [91.2, 90.8, 91.9, 90.5, 91.4], [90.6, 90.9, 91.1, 89.8, 90.7]
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    r = paired(a, b)
    assert r.mean_difference == pytest.approx(0.54) and r.t == pytest.approx(mean / (sd / math.sqrt(5)))
    assert r.t_test_p == pytest.approx(2 * stats.t.sf(abs(r.t), 4))  # two-sided
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue) and r.effect_size == pytest.approx(mean / sd)


def test_degenerate_comparisons():
    same = paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.mean_difference == 0 and same.t_test_p == 1.0 and same.wilcoxon_p is None
    with pytest.raises(ConfigError, match="two equally long lists"):
        paired([1.0], [2.0])


def test_paired_accuracy_by_hand_and_as_scipy_tests_it():
    # 50 images both networks get right, 3 only the first, 12 only the second, 5 neither
    a = [True] * 50 + [True] * 3 + [False] * 12 + [False] * 5
    b = [True] * 50 + [False] * 3 + [True] * 12 + [False] * 5
    r = paired_accuracy(a, b)
    assert (r.n, r.both, r.only_a, r.only_b, r.neither) == (70, 50, 3, 12, 5)
    assert r.top1_a == pytest.approx(100 * 53 / 70) and r.top1_b == pytest.approx(100 * 62 / 70)
    assert r.difference == pytest.approx(100 * 9 / 70)
    assert r.mcnemar_p == pytest.approx(2 * stats.binom.cdf(3, 15, 0.5))  # exact, two-sided
    half = 1.959963984540054 * math.sqrt(15 - 81 / 70) / 70
    assert r.ci95 == pytest.approx((100 * (9 / 70 - half), 100 * (9 / 70 + half)))


def test_paired_accuracy_of_identical_answers_and_bad_input():
    r = paired_accuracy([True, False, True], [True, False, True])
    assert r.difference == 0 and r.ci95 == (0.0, 0.0) and r.mcnemar_p == 1.0 and r.only_a == r.only_b == 0
    with pytest.raises(ConfigError, match="the same images for both"):
        paired_accuracy([True], [True, False])
    with pytest.raises(ConfigError, match="the same images for both"):
        paired_accuracy([], [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=200))
def test_paired_accuracy_holds_together(answers):
    a, b = zip(*answers)
    r = paired_accuracy(a, b)
    assert r.both + r.only_a + r.only_b + r.neither == r.n == len(answers)
    assert r.difference == pytest.approx(r.top1_b - r.top1_a)
    assert r.ci95[0] <= r.difference <= r.ci95[1] and 0 <= r.mcnemar_p <= 1
    swapped = paired_accuracy(b, a)  # the order of the two networks flips the sign, nothing else
    assert swapped.difference == pytest.approx(-r.difference) and swapped.mcnemar_p == pytest.approx(r.mcnemar_p)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    plain = out / "plain20.yaml"
    plain.write_text("model: plain20\nepochs: 1\n")
    report = compare(["digits", str(plain)], 2, out, {"subset": 256, "epochs": 1, "tensorboard": False},
                     log=lambda s: None)
    return out, report


def test_compare_trains_every_configuration_with_the_same_seeds(compared):
    out, report = compared
    assert report["seeds"] == [0, 1] and set(report["top1"]) == {"digits", "plain20"}
    assert all(0 <= v <= 100 for vals in report["top1"].values() for v in vals)
    test = report["paired_against_digits"]["plain20"]
    assert test["mean_difference"] == pytest.approx(sum(report["top1"]["plain20"]) / 2
                                                    - sum(report["top1"]["digits"]) / 2)
    assert json.loads((out / "compare.json").read_text())["top1"] == report["top1"]
    assert (out / "compare.png").stat().st_size > 5000
    again = compare(["digits", str(out / "plain20.yaml")], 2, out, {"subset": 256, "epochs": 1},
                    log=lambda s: None)  # finished runs are reused, not trained again
    assert again["top1"] == report["top1"]


def test_an_ensemble_of_two_seeds(compared):
    out, _ = compared
    ckpts = [str(out / "digits" / f"seed{s}" / "best.pt") for s in (0, 1)]
    r = ensemble(ckpts)
    assert r["images"] == 360 and len(r["members_top1"]) == 2
    assert r["ensemble_top1_by_size"][0] == pytest.approx(r["members_top1"][0])
    assert r["disagreement"][0][0] == 0 and r["disagreement"][0][1] == r["disagreement"][1][0]
    assert r["mean_pairwise_disagreement"] == r["disagreement"][0][1]


def test_two_networks_on_the_same_images(compared, tmp_path, capsys):
    out, _ = compared
    first, second = (str(out / "digits" / f"seed{s}" / "best.pt") for s in (0, 1))
    assert main(["eval", first, "--against", second, "--json", "--out", str(tmp_path)]) in (0, None)
    r = json.loads(capsys.readouterr().out)
    members = ensemble([first, second])["members_top1"]
    assert r["n"] == 360 and r["split"] == "test" and r["labels"] == ["seed0", "seed1"]
    assert [r["top1_a"], r["top1_b"]] == pytest.approx(members)
    assert r["both"] + r["only_a"] + r["only_b"] + r["neither"] == 360
    assert r["difference"] == pytest.approx(100 * (r["only_b"] - r["only_a"]) / 360)
    assert json.loads((tmp_path / "against_test.json").read_text()) == r
    assert main(["eval", first, "--against", second]) in (0, None)
    text = capsys.readouterr().out
    assert "seed0  test top-1" in text and "McNemar's exact test p = " in text and "95% interval" in text


def test_bad_comparisons_are_one_line_errors(tmp_path, capsys):
    assert main(["compare", "digits", "--seeds", "3", "--out", str(tmp_path)]) == 2
    assert "at least two different configurations" in capsys.readouterr().err
    assert main(["compare", "digits", "digitz", "--out", str(tmp_path)]) == 2
    assert "unknown recipe 'digitz'" in capsys.readouterr().err
    assert main(["ensemble", "resnet20_cifar10"]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert main(["eval", "resnet20_cifar10", "--against", "resnet56_cifar10", "--tta-flip", "--mode", "bf16"]) == 2
    assert "leave out --tta-flip, --mode" in capsys.readouterr().err
    assert main(["eval", "resnet20_cifar10", "--against", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_networks_of_other_classes_are_not_compared(compared, capsys):
    out, _ = compared
    digits = str(out / "digits" / "seed0" / "best.pt")
    assert main(["eval", digits, "--against", "resnet20_cifar10"]) == 2
    err = capsys.readouterr().err
    assert "resnet20_cifar10 predicts other classes" in err and len(err.strip().splitlines()) == 1


def test_kfold_cross_validation_holds_out_each_fold_once(tmp_path, capsys):
    plain = tmp_path / "plain20.yaml"
    plain.write_text("model: plain20\nepochs: 1\n")
    args = ["compare", "digits", str(plain), "--kfold", "3", "--subset", "240", "--epochs", "1",
            "--set", "tensorboard=false", "--out", str(tmp_path / "cv"), "--json"]
    assert main(args) in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["kfold"] == 3 and report["seeds"] == [] and report["evaluated_on"] == "the held-out fold"
    assert all(len(v) == 3 for v in report["top1"].values()) and report["summary"]["digits"]["n"] == 3
    for k in range(3):
        run = json.loads((tmp_path / "cv" / "digits" / f"fold{k}" / "report.json").read_text())
        assert run["test"] is None and run["val"]["top1"] == report["top1"]["digits"][k]
        assert f"fold {k} of 3" in run["splits"]["val"]
    assert main(["compare", "digits", str(plain), "--kfold", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--kfold >= 2" in capsys.readouterr().err


def test_folds_split_the_training_data_into_balanced_parts():
    labels = torch.arange(120) % 6
    held = [fold_indices(labels, 4, k) for k in range(4)]
    assert torch.equal(torch.cat([h for _, h in held]).sort().values, torch.arange(120))  # each once
    for rest, h in held:
        assert torch.bincount(labels[h]).tolist() == [5] * 6 and len(rest) + len(h) == 120
    cfg = make_config("digits", folds=4, fold=2)
    data = prepare_data(cfg)
    assert len(data.val) in (359, 360) and len(data.train) + len(data.val) == 1437
    with pytest.raises(ConfigError, match="'fold' must be below folds"):
        make_config("digits", folds=3, fold=3)
    with pytest.raises(ConfigError, match="leave out val_size"):
        make_config("digits", folds=3, val_size=0.2)
