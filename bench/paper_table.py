"""The paper's CIFAR-10 table and Figure 6 from the campaign's finished runs (bench/results/campaign/*.json).

    python bench/paper_table.py        # the markdown table, bench/results/paper_table.json and the figure

For each network: the runs (seeds) that finished, the test error of each (the 10,000 test images, scored once
with the final weights), their mean and standard deviation, beside He et al. (2015)'s Table 6; and Figure 6
of the paper at full length: the training error (dashed, running over each epoch, on augmented images) and the
validation error (solid, the 5,000 held-out images) against iterations, plain networks on the left and ResNets
on the right. Only finished runs count in the table (`python bench/campaign.py status` lists the others); the
figure also draws the runs still training as far as their saved states go (thinner, "so far" in the legend).
Nothing is read from the test set but the final score each finished run recorded, and, where the runs'
final weights and the data are here, each one's answers on the test images for the paired comparisons: the
comparisons the paper draws (a ResNet against its plain twin, a deeper network against a shallower one) on runs
of the same seed, and the same network's seeds against each other, each as the difference in top-1 with its
95% interval and McNemar's exact test on the images only one of the two gets right. A pair of runs says how
sure the 10,000 test images make their difference; the seed pairs show how far two runs of one recipe differ.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CAMPAIGN_STATE, CIFAR10_LOSSLESS, RESULTS, write_result  # noqa: E402

from resnets.errors import DataError  # noqa: E402

FIGURE = HERE.parent / "docs" / "figures" / "paper_figure6.png"
# He et al. 2015, Table 6: CIFAR-10 test error (%); for ResNet-110 the best of 5 runs, and their mean +- std
PAPER_TEST_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43,
                    "resnet1202": 7.93}
# The comparisons of the paper's Table 6 and Figure 6: the residual network against its plain twin, and the
# deeper network against the shallower one, plain and residual
PAIRS = [("plain20", "resnet20"), ("plain56", "resnet56"), ("plain20", "plain56"), ("resnet20", "resnet56")]
PAPER_NOTE = {"resnet110": "6.61 +- 0.16 over 5 runs", "plain20": "Figure 6 only", "plain56": "Figure 6 only"}
ORDER = ["plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


def load_runs(results: Path) -> list[dict[str, Any]]:
    """The finished runs' records, in the order of ``ORDER`` then seed."""
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    runs = [r for r in runs if "test_top1" in r and "model" in r
            and r.get("config", {}).get("val_size") != 0]  # the paper's 45k/5k split: not the runs on all 50k
    return sorted(runs, key=lambda r: (ORDER.index(r["model"]) if r["model"] in ORDER else len(ORDER), r["seed"]))


def in_progress(manifest: Path, state: Path, results: Path) -> list[dict[str, Any]]:
    """The curves so far of the manifest's unfinished runs on the paper's split that have a saved state."""
    from resnets.engine.campaign import load_manifest, progress, unfinished

    runs = load_manifest(manifest, {"cifar10_lossless": str(CIFAR10_LOSSLESS)})
    found = (progress(r, state) for r in unfinished(runs, results) if r.config(state).val_size != 0)
    return [p for p in found if p is not None and p["model"] in ORDER]


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per network: seeds, test errors, their mean and std (None for one run), the final training error."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_model.setdefault(r["model"], []).append(r)
    out = {}
    for model, rs in by_model.items():
        errors = [round(100 - r["test_top1"], 2) for r in rs]
        out[model] = {"seeds": [r["seed"] for r in rs], "iterations": sorted({r["iterations"] for r in rs}),
                      "test_error": errors, "test_error_mean": round(statistics.mean(errors), 2),
                      "test_error_std": round(statistics.stdev(errors), 2) if len(errors) > 1 else None,
                      "final_train_error_mean": round(statistics.mean(r["final_train_error"] for r in rs), 2),
                      "paper_test_error": PAPER_TEST_ERROR.get(model), "paper_note": PAPER_NOTE.get(model)}
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| network | paper: test error | here: test error | n | seeds | final training error |",
             "|---|---|---|---|---|---|"]
    for model, s in summary.items():
        here = f"{s['test_error_mean']:.2f}%" + (f" ± {s['test_error_std']:.2f}" if s["test_error_std"] else "")
        paper, note = (f"{s['paper_test_error']:.2f}%" if s["paper_test_error"] else ""), s["paper_note"]
        paper = f"{paper} ({note})" if paper and note else (paper or note or "-")
        lines.append(f"| {model} | {paper} | **{here}** | {len(s['seeds'])} | "
                     f"{', '.join(map(str, s['seeds']))} | {s['final_train_error_mean']:.2f}% |")
    return "\n".join(lines)


def test_answers(runs: list[dict[str, Any]], results: Path, data: Path) -> dict[str, list[bool]]:
    """Each run's right (True) or wrong answer on every test image of ``data``, from its final weights in
    float32, as the run scored itself when it ended."""
    from resnets.analysis.ensemble import member_probabilities

    probs, labels, _ = member_probabilities([results / r["weights"] for r in runs], str(data), "test")
    return {r["run"]: (p.argmax(1) == labels).tolist() for r, p in zip(runs, probs)}


def paired(runs: list[dict[str, Any]], answers: dict[str, list[bool]]) -> list[dict[str, Any]]:
    """``PAIRS`` on every seed both networks have, then each network's first seed against its others."""
    from resnets.analysis.stats import paired_accuracy

    run = {(r["model"], r["seed"]): r["run"] for r in runs}
    seeds: dict[str, list[int]] = {}
    for model, seed in run:
        seeds.setdefault(model, []).append(seed)
    pairs = [((a, s), (b, s)) for a, b in PAIRS for s in seeds.get(a, []) if s in seeds.get(b, [])]
    pairs += [((m, ss[0]), (m, s)) for m, ss in seeds.items() for s in ss[1:]]
    return [{"first": a[0], "second": b[0], "seeds": [a[1], b[1]],
             **vars(paired_accuracy(answers[run[a]], answers[run[b]]))} for a, b in pairs]


def paired_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| first | second | seeds | test error: first, second | second - first | 95% interval | "
             "right only in first / only in second | McNemar p |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["ci95"]
        seeds = str(r["seeds"][0]) if r["seeds"][0] == r["seeds"][1] else f"{r['seeds'][0]} vs {r['seeds'][1]}"
        lines.append(f"| {r['first']} | {r['second']} | {seeds} | {100 - r['top1_a']:.2f}%, {100 - r['top1_b']:.2f}% "
                     f"| {-r['difference']:+.2f} points | {-high:+.2f} to {-low:+.2f} | {r['only_a']} / "
                     f"{r['only_b']} | {r['mcnemar_p']:.2g} |")
    return "\n".join(lines)


def plot_figure6(runs: list[dict[str, Any]], path: Path, training: list[dict[str, Any]] = ()) -> None:
    """Training (dashed) and validation (solid) error against iterations; plain left, ResNets right. The runs
    still ``training`` are drawn as far as they have gone, thinner."""
    import matplotlib.pyplot as plt

    from resnets.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, family, title in ((axes[0], "plain", "plain networks"), (axes[1], "resnet", "ResNets")):
        for r in (r for r in runs if r["model"].startswith(family)):
            _curves(ax, r, f"{r['model']}-s{r['seed']} (test {100 - r['test_top1']:.2f}%)", width=1.5)
        for r in (r for r in training if r["model"].startswith(family)):
            _curves(ax, r, f"{r['model']}-s{r['seed']} (so far: {r['step']:,} of {r['total']:,})", width=0.8)
        ax.set(title=title, xlabel="iterations (1e4)", ylim=(0, 30), xlim=(0, 6.4))
        if not ax.lines:
            ax.text(3.2, 15, "no run yet", ha="center", color="gray")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle("CIFAR-10, the paper's schedule: training error dashed, validation error solid")
    save_figure(fig, path)


def _curves(ax: Any, run: dict[str, Any], label: str, width: float) -> None:
    steps = [h["step"] / 1e4 for h in run["history"]]
    line, = ax.plot(steps, [h["train_error"] for h in run["history"]], "--", lw=width * 2 / 3)
    ax.plot(steps, [h["val_error"] for h in run["history"]], "-", lw=width, color=line.get_color(), label=label)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS / "campaign")
    p.add_argument("--figure", type=Path, default=FIGURE)
    p.add_argument("--out", type=Path, default=RESULTS, help="where paper_table.json goes")
    p.add_argument("--manifest", type=Path, default=HERE / "campaign.yaml", help="the campaign's runs")
    p.add_argument("--state", type=Path, default=CAMPAIGN_STATE, help="the unfinished runs' states")
    p.add_argument("--data", type=Path, default=CIFAR10_LOSSLESS,
                   help="the runs' data, for the paired comparisons on its test images (CIFAR-10 in the original "
                        "python-batches layout, as the campaign trains on)")
    args = p.parse_args(argv)
    runs = load_runs(args.results)
    summary = summarize(runs)
    scored = [r for r in runs if (args.results / r.get("weights", "-")).is_file()]
    rows, missing = [], None
    try:
        rows = paired(scored, test_answers(scored, args.results, args.data)) if scored else []
    except DataError as e:  # no data here to score on: the table and the figure still come
        missing = e
    write_result("paper_table", {"command": "python bench/paper_table.py", "networks": summary, "paired": rows},
                 args.out, echo=False)
    plot_figure6(runs, args.figure, in_progress(args.manifest, args.state, args.results))
    print(table(summary))
    if rows:
        print("\nPaired on the test images:\n" + paired_table(rows))
    elif missing is not None:
        print(f"\nNo paired comparisons: {missing} (pass --data)")


if __name__ == "__main__":
    main()
