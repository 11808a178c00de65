"""The paper's table and Figure 6 from campaign results: mean and spread over seeds, the paper beside them."""
import json
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
