"""The paper's table and Figure 6 from campaign results: mean and spread over seeds, the paper beside them."""
import json
import time
from pathlib import Path

from tests.conftest import bench_script


def _module():
    return bench_script("paper_table")


def _result(folder: Path, model: str, seed: int, top1: float) -> None:
    history = [{"epoch": e, "step": 351 * e, "train_error": 50 / e, "val_error": 60 / e} for e in range(1, 4)]
    (folder / f"{model}-paper-s{seed}.json").write_text(json.dumps(
        {"run": f"{model}-paper-s{seed}", "model": model, "seed": seed, "iterations": 64000, "test_top1": top1,
         "final_train_error": 1.0 + seed, "history": history}))


def test_table_and_figure_from_finished_runs(tmp_path):
    results = tmp_path / "campaign"
    results.mkdir()
    _result(results, "resnet20", 0, 91.12)
    _result(results, "resnet20", 1, 91.52)
    _result(results, "plain20", 0, 90.0)
    (results / "resnet20-paper-s0.safetensors").write_bytes(b"weights")  # not a result
    _result(results, "resnet20", 2, 95.0)
    full = json.loads((results / "resnet20-paper-s2.json").read_text()) | {"config": {"val_size": 0}}
    (results / "resnet20-paper-s2.json").write_text(json.dumps(full))  # all 50k images: not the paper's protocol
    pt = _module()
    figure = tmp_path / "fig6.png"
    pt.main(["--results", str(results), "--figure", str(figure), "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "paper_table.json").read_text())["networks"]
    assert list(summary) == ["plain20", "resnet20"]  # plain networks first, as the paper's figure
    r20 = summary["resnet20"]
    assert r20["test_error"] == [8.88, 8.48] and r20["test_error_mean"] == 8.68 and r20["test_error_std"] == 0.28
    assert r20["paper_test_error"] == 8.75 and r20["final_train_error_mean"] == 1.5
    assert summary["plain20"]["test_error_std"] is None and summary["plain20"]["paper_test_error"] is None
    lines = pt.table(summary).splitlines()
    assert lines[2].startswith("| plain20 | Figure 6 only | **10.00%** | 1 |")
    assert lines[3].startswith("| resnet20 | 8.75% | **8.68% ± 0.28** | 2 | 0, 1 |")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_draws_the_runs_still_training(tmp_path):
    from resnets.engine.campaign import Budget, advance, load_manifest

    manifest = tmp_path / "campaign.yaml"
    manifest.write_text(json.dumps({"runs": [  # JSON is YAML; the second run has not started
        {"name": "p20", "recipe": "digits", "model": "plain20", "data": "digits",
         "overrides": {"epochs": 2, "batch_size": 64}},
        {"name": "p56", "recipe": "digits", "model": "plain56", "data": "digits"}]}))
    state, results = tmp_path / "state", tmp_path / "campaign"
    advance(load_manifest(manifest)[0], state, Budget(time.monotonic() + 600, max_steps=25), results)
    pt = _module()
    (training,) = pt.in_progress(manifest, state, results)
    assert (training["run"], training["model"], training["step"], training["total"]) == ("p20", "plain20", 25, 38)
    assert [h["step"] for h in training["history"]] == [19]  # the epochs that ended
    figure = tmp_path / "fig6.png"
    pt.main(["--results", str(results), "--figure", str(figure), "--out", str(tmp_path), "--manifest",
             str(manifest), "--state", str(state)])
    assert json.loads((tmp_path / "paper_table.json").read_text())["networks"] == {}  # the table: finished only
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _finished(tmp_path, runs):
    """Train tiny campaign runs on the embedded digits to their end: results with final weights."""
    from resnets.engine.campaign import Budget, advance, load_manifest

    manifest = tmp_path / "campaign.yaml"
    manifest.write_text(json.dumps({"runs": [
        {"name": f"{model}-s{seed}", "recipe": "digits", "model": model, "seed": seed, "data": "digits",
         "overrides": {"epochs": 1, "batch_size": 64}} for model, seed in runs]}))
    results = tmp_path / "campaign"
    for run in load_manifest(manifest):
        advance(run, tmp_path / "state", Budget(time.monotonic() + 600, max_steps=1000), results)
    return manifest, results


def test_paired_comparisons_score_each_run_as_it_scored_itself(tmp_path):
    manifest, results = _finished(tmp_path, [("plain20", 0), ("resnet20", 0), ("resnet20", 1)])
    pt = _module()
    pt.main(["--results", str(results), "--figure", str(tmp_path / "fig6.png"), "--out", str(tmp_path),
             "--manifest", str(manifest), "--state", str(tmp_path / "state"), "--data", "digits"])
    record = json.loads((tmp_path / "paper_table.json").read_text())
    rows = record["paired"]
    assert [(r["first"], r["second"], r["seeds"]) for r in rows] == [("plain20", "resnet20", [0, 0]),
                                                                    ("resnet20", "resnet20", [0, 1])]
    top1 = {f"{m}-s{s}": json.loads((results / f"{m}-s{s}.json").read_text())["test_top1"]
            for m, s in [("plain20", 0), ("resnet20", 0), ("resnet20", 1)]}
    for r, (a, b) in zip(rows, [("plain20-s0", "resnet20-s0"), ("resnet20-s0", "resnet20-s1")]):
        assert abs(r["top1_a"] - top1[a]) < 0.01 and abs(r["top1_b"] - top1[b]) < 0.01  # the final weights, float32
        assert r["both"] + r["only_a"] + r["only_b"] + r["neither"] == r["n"] == 360  # the digits' test images
        assert 0 < r["mcnemar_p"] <= 1


def test_pairs_follow_the_paper_and_the_table_reads_in_test_error():
    pt = _module()
    runs = [{"run": f"{m}-s{s}", "model": m, "seed": s} for m, s in
            [("plain20", 0), ("resnet20", 0), ("resnet20", 1), ("plain56", 1), ("resnet56", 0)]]
    right, wrong = [True] * 8 + [False] * 2, [True] * 6 + [False] * 4  # 80% and 60% of ten images
    answers = {"plain20-s0": wrong, "resnet20-s0": right, "resnet20-s1": wrong, "plain56-s1": wrong,
               "resnet56-s0": right}
    rows = pt.paired(runs, answers)
    # plain56 and resnet56 share no seed; plain20 against plain56 neither; resnet20 against resnet56 on seed 0
    assert [(r["first"], r["second"], r["seeds"]) for r in rows] == [
        ("plain20", "resnet20", [0, 0]), ("resnet20", "resnet56", [0, 0]), ("resnet20", "resnet20", [0, 1])]
    assert rows[0]["difference"] == 20.0 and rows[0]["only_b"] == 2 and rows[0]["only_a"] == 0
    lines = pt.paired_table(rows).splitlines()
    assert lines[2].startswith("| plain20 | resnet20 | 0 | 40.00%, 20.00% | -20.00 points |")
    assert lines[4].startswith("| resnet20 | resnet20 | 0 vs 1 | 20.00%, 40.00% | +20.00 points |")


def test_without_the_data_the_table_comes_and_says_why_nothing_is_paired(tmp_path, capsys):
    manifest, results = _finished(tmp_path, [("resnet20", 0)])
    _module().main(["--results", str(results), "--figure", str(tmp_path / "fig6.png"), "--out", str(tmp_path),
                    "--manifest", str(manifest), "--state", str(tmp_path / "state"),
                    "--data", str(tmp_path / "absent.tar.xz")])
    assert json.loads((tmp_path / "paper_table.json").read_text())["paired"] == []
    out = capsys.readouterr().out
    assert "| resnet20 | 8.75% |" in out
    assert out.rstrip().splitlines()[-1].startswith("No paired comparisons: data not found: ")
