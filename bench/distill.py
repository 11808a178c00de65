"""Does a student learn more from a teacher than from the labels alone? ResNet-20 trained with the ``experiment``
recipe (SGD 0.1, cosine, batch 128) on CIFAR-10, alone and distilled from a trained teacher (Hinton's loss, T = 4,
alpha = 0.9), over the same seeds, compared with ``resnets compare`` (mean ± std, paired t-test and Wilcoxon).

    python bench/distill.py --teacher runs/x/resnet-56/best.pt --data cifar-10-python.tar.gz \\
                            [--epochs 5 --seeds 3 --out runs/distill]

Nothing is chosen on the test split: both arms use the recipe's settings and Hinton's published T and alpha.
Writes bench/results/distill.json (each arm's accuracy per seed, the statistics, the wall time per run).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from resnets.analysis.compare import compare
from resnets.machine import machine_info

from common import write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--student", default="resnet20")
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="runs/distill")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "src/resnets/recipes/experiment.yaml").read_text())
    base.pop("description", None)
    arms = {"alone": {**base, "model": args.student},
            "distilled": {**base, "model": args.student, "teachers": [str(Path(args.teacher).resolve())]}}
    configs = []
    for name, recipe in arms.items():
        path = out / f"{args.student}-{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        configs.append(str(path))
    report = compare(configs, args.seeds, out, {"data": args.data, "epochs": args.epochs, "progress": False})
    seconds = {Path(c).stem: [json.loads((out / Path(c).stem / f"seed{s}" / "report.json").read_text())["seconds"]
                              for s in range(args.seeds)] for c in configs}
    teacher_report = Path(args.teacher).parent / "report.json"
    teacher_top1 = json.loads(teacher_report.read_text())["test"]["top1"] if teacher_report.is_file() else None
    write_result("distill", {"command": f"python bench/distill.py --teacher TEACHER --data DATA --epochs "
                                        f"{args.epochs:g} --seeds {args.seeds}",
                             "teacher": args.teacher, "teacher_test_top1": teacher_top1, "student": args.student, "epochs": args.epochs,
                             "arms": arms, "seconds": seconds, **report, "machine": machine_info()})


if __name__ == "__main__":
    main()
