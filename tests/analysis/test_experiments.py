"""The experiments run end to end at a tiny scale, resume, and write their figures, CSV and report."""
import csv
import math

import pytest

from resnets import ConfigError
from resnets.analysis.experiments import EXPERIMENTS, run_experiment
from resnets.cli import main

TINY = dict(data="digits", epochs=1, subset=48, batch_size=16, progress=False)


def test_degradation_tiny(tmp_path):
    result = run_experiment("degradation", tmp_path, depths=(8, 14), **TINY)
    labels = [r["label"] for r in result["runs"]]
    assert labels == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == labels
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train_error", "val_error", "test_error"))
    assert rows[2]["params"] == rows[0]["params"]  # option A shortcuts add no parameters
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "| plain-14 |" in (tmp_path / "report.md").read_text()

    # a finished run is not trained again; a stopped one resumes from last.pt
    stamp = (tmp_path / "resnet-8" / "report.json").stat().st_mtime_ns
    (tmp_path / "plain-14" / "report.json").unlink()
    again = run_experiment("degradation", tmp_path, depths=(8, 14), **TINY)
    assert (tmp_path / "resnet-8" / "report.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "plain-14" / "report.json").exists()
    assert [r["test_error"] for r in again["runs"]] == [r["test_error"] for r in result["runs"]]


@pytest.mark.parametrize("name", ["shortcuts", "preact", "depth"])
def test_other_experiments_tiny(tmp_path, name):
    result = run_experiment(name, tmp_path, depths=(8,), **TINY)
    assert len(result["runs"]) == {"shortcuts": 3, "preact": 2, "depth": 1}[name]
    assert (tmp_path / "summary.png").exists() and (tmp_path / "report.md").exists()
    if name == "shortcuts":
        params = [r["params"] for r in result["runs"]]
        assert params[0] < params[1] < params[2]  # A: none, B: projections where the shape changes, C: everywhere


def test_highway_experiment_tiny_reports_the_gates(tmp_path):
    result = run_experiment("highway", tmp_path, depths=(8,), **TINY)
    assert [r["label"] for r in result["runs"]] == ["plain-8", "highway-8", "ResNet-8"]
    gates = result["runs"][1]["gates"]
    assert len(gates) == 3 and all(0 < g < 1 for g in gates)  # one per block, after training
    assert result["runs"][0]["gates"] is None and (tmp_path / "gates.png").exists()
    assert "transform-gate opening of highway-8" in (tmp_path / "report.md").read_text()


def test_bad_experiment_inputs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="6n\\+2"):
        run_experiment("depth", tmp_path, depths=(21,), **TINY)
    assert main(["experiment", "depth", "--depth", "21", "--out", str(tmp_path)]) == 2
    assert "6n+2" in capsys.readouterr().err
    assert set(EXPERIMENTS) == {"degradation", "shortcuts", "preact", "depth", "highway", "ode", "momentum"}
    # every run's settings are checked before any trains: nothing is written for a bad one
    assert main(["experiment", "degradation", "--epochs", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "setting 'epochs' must be > 0, got 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_seeds_give_mean_std_bands_and_paired_tests(tmp_path, capsys):
    result = run_experiment("degradation", tmp_path, depths=(8,), seeds=2, seed=3, **TINY)
    assert result["seeds"] == [3, 4]
    plain, residual = result["runs"]
    assert (tmp_path / "plain-8" / "seed3" / "report.json").is_file() and plain["folder"] == "plain-8/seed3"
    for r in result["runs"]:
        values = r["val_error_per_seed"]
        assert len(values) == 2 and r["val_error"] == pytest.approx(sum(values) / 2, abs=0.01)
        assert r["val_error_std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2), abs=0.01)
        assert "val_error_std" in r["curve"][0] and r["seeds"] == [3, 4]
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["seeds"] == "2" and float(rows[1]["test_error_std"]) == residual["test_error_std"]
    report = (tmp_path / "report.md").read_text()
    assert "over 2 seeds (3, 4)" in report and "±" in report and "ResNet-8 against plain-8" in report
    assert main(["experiment", "signal", "--seeds", "2", "--out", str(tmp_path / "s")]) == 2
    assert "--seeds applies to the trained experiments" in capsys.readouterr().err
