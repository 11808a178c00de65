"""Does a student learn more from a teacher than from the labels alone? ResNet-20 trained with the ``experiment``
recipe (SGD 0.1, cosine, batch 128) on CIFAR-10, alone and distilled from a trained teacher (Hinton's loss, T = 4,
alpha = 0.9), over the same seeds, compared with ``resnets compare`` (mean ± std, paired t-test and Wilcoxon).

    python bench/distill.py --teacher runs/x/resnet-56/best.pt --data cifar-10-python.tar.gz \\
                            [--epochs 5 --seeds 3 --out runs/distill --results bench/results]

Nothing is chosen on the test split: both arms use the recipe's settings and Hinton's published T and alpha.
Writes bench/results/distill.json (each arm's accuracy per seed, the statistics, the wall time per run).

The teacher's forward passes make a distilled run longer. At equal time instead of equal recipe:

    python bench/distill.py --equal-time bench/results/distill.json --data cifar-10-python.tar.gz

trains the student alone, over the same seeds, for the recorded epochs times the distilled / alone time ratio,
and tests it paired against the recorded distilled runs (bench/results/distill_equal_time.json).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from resnets.analysis.compare import compare, run_one
from resnets.analysis.stats import paired, summarize
from resnets.machine import machine_info

from common import RESULTS, write_result


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _base_recipe() -> dict:
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "src/resnets/recipes/experiment.yaml").read_text())
    base.pop("description", None)
    return base


def _seconds(out: Path, config: str, seeds: int) -> list[float]:
    return [json.loads((out / Path(config).stem / f"seed{s}" / "report.json").read_text())["seconds"]
            for s in range(seeds)]


def equal_time(recorded: Path, data: str, out: Path, results: str) -> None:
    """The student alone for as long as a distilled run took, paired against the recorded distilled runs.

    The time ratio is the one measured where the distilled runs ran (``recorded_machine``); this run's seconds are
    this machine's, so compare seconds only within a machine. Epochs, not seconds, carry the budget across."""
    before = json.loads(recorded.read_text())
    student, seeds = before["student"], len(before["seeds"])
    ratio = _mean(before["seconds"][f"{student}-distilled"]) / _mean(before["seconds"][f"{student}-alone"])
    epochs = round(before["epochs"] * ratio, 2)
    config = out / f"{student}-alone-equal-time.yaml"
    config.write_text(yaml.safe_dump({**_base_recipe(), "model": student}))
    overrides = {"data": data, "epochs": epochs}
    alone = [run_one(str(config), {"seed": s}, out / config.stem / f"seed{s}", overrides) for s in range(seeds)]
    distilled = before["top1"][f"{student}-distilled"]
    write_result("distill_equal_time", {
        "command": f"python bench/distill.py --equal-time {recorded.name} --data DATA",
        "student": student, "seeds": list(range(seeds)), "distilled_epochs": before["epochs"], "alone_epochs": epochs,
        "time_ratio": round(ratio, 3), "seconds": {"alone": _seconds(out, str(config), seeds),
                                                   "distilled": before["seconds"][f"{student}-distilled"]},
        "top1": {"alone": alone, "distilled": distilled}, "recorded_machine": before["machine"],
        "summary": {"alone": vars(summarize(alone)), "distilled": vars(summarize(distilled))},
        "distilled_minus_alone": vars(paired(distilled, alone)), "machine": machine_info()}, results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher")
    p.add_argument("--data", required=True)
    p.add_argument("--student", default="resnet20")
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--equal-time", metavar="DISTILL_JSON", help="train the student alone for a distilled run's time")
    p.add_argument("--out", default="runs/distill", help="where the runs go")
    p.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.equal_time:
        return equal_time(Path(args.equal_time), args.data, out, args.results)
    if not args.teacher:
        p.error("--teacher is required (or --equal-time)")
    base = _base_recipe()
    arms = {"alone": {**base, "model": args.student},
            "distilled": {**base, "model": args.student, "teachers": [str(Path(args.teacher).resolve())]}}
    configs = []
    for name, recipe in arms.items():
        path = out / f"{args.student}-{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        configs.append(str(path))
    report = compare(configs, args.seeds, out, {"data": args.data, "epochs": args.epochs, "progress": False})
    seconds = {Path(c).stem: _seconds(out, c, args.seeds) for c in configs}
    teacher_report = Path(args.teacher).parent / "report.json"
    teacher_top1 = json.loads(teacher_report.read_text())["test"]["top1"] if teacher_report.is_file() else None
    write_result("distill", {"command": f"python bench/distill.py --teacher TEACHER --data DATA --epochs "
                                        f"{args.epochs:g} --seeds {args.seeds}",
                             "teacher": args.teacher, "teacher_test_top1": teacher_top1, "student": args.student,
                             "epochs": args.epochs,
                             "arms": arms, "seconds": seconds, **report, "machine": machine_info()}, args.results)


if __name__ == "__main__":
    main()
