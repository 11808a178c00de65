"""``resnets experiment NAME`` (the paper's experiments, signal propagation) and ``resnets analyze
gradients|lesion|explain``."""
from __future__ import annotations

import argparse
import json

from ..analysis.experiments import EXPERIMENTS
from ..errors import ConfigError
from .engine import key_value


ANALYSES = ("signal", "landscape", "alignment")  # not a list of trained networks: their own runners


def _cmd_experiment(args: argparse.Namespace) -> None:
    from ..analysis.experiments import run_experiment

    out = args.out or f"runs/experiment-{args.name}"
    if args.seeds != 1 and args.name in ("signal", "landscape"):
        raise ConfigError(f"--seeds applies to the trained experiments ({', '.join(EXPERIMENTS)}), not {args.name}")
    if args.name == "signal":
        from ..analysis.signal import run_signal

        run_signal(out, quick=args.quick, seed=args.seed)
        print(f"figure and numbers: {out}/signal.png, {out}/signal.json")
        return
    if args.name == "landscape":
        _landscape(args, out)
        return
    if args.name == "alignment":
        _alignment(args, out)
        return
    if args.quick:  # about 5 minutes on 2 CPU cores: 5,000 images, 3 epochs (117 steps of 128)
        args.subset, args.epochs = args.subset or 5000, args.epochs or 3
    extra = {"batch_size": args.batch_size} if args.batch_size else {}
    result = run_experiment(args.name, out, data=args.data,
                            data_root=args.data_root, epochs=args.epochs, subset=args.subset,
                            depths=tuple(args.depth) if args.depth else None, seed=args.seed, seeds=args.seeds,
                            progress=not args.no_progress, quick=args.quick, **extra)
    for r in result["runs"]:
        def show(key: str, r: dict = r) -> str:
            return f"{r[key]:6.2f}%" + (f" ± {r[key + '_std']:.2f}" if key + "_std" in r else "")

        test = f"test error {show('test_error')}" if r["test_error"] is not None else ""
        print(f"{r['label']:<32} {r['params']:>10,} params  training error {show('train_error')}  "
              f"validation error {show('val_error')}  {test}  {r['seconds']:.0f} s")
    print(f"report: {result['out']}/report.md")


def _alignment(args: argparse.Namespace, out: str) -> None:
    from pathlib import Path

    from ..analysis.alignment import conv_networks, run_alignment

    if args.seeds < 1:  # before any training
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    conv, images = conv_networks(Path(out), args.checkpoint, data=args.data, data_root=args.data_root,
                                 quick=args.quick, epochs=args.epochs, subset=args.subset, seed=args.seed,
                                 progress=not args.no_progress)
    report = run_alignment(out, quick=args.quick, seeds=args.seeds, conv=conv, conv_images=images)
    for kind in ("residual", "plain", "residual_init"):
        for depth, m in report["fc"][kind].items():
            print(f"FC {kind:<13} {depth:>3} blocks: test {m['test_top1']:5.1f}%  RA1 line {m['ra1_line_share']:.2f}  "
                  f"RA2 |<u,v>| {m['ra2_within_block']:.2f}  RA3 effective rank {m['ra3_effective_rank']:.1f}  "
                  f"RA4 top sigma {m['ra4_top_singular']:.3f}")
    for label, m in report.get("conv", {}).items():
        print(f"{label:<32} RA1 line {m['ra1_line_share']:.2f}  RA2 |<u,v>| {m['ra2_within_block']:.2f}  "
              f"RA3 effective rank {m['ra3_effective_rank']:.1f}")
    print(f"RA4: top singular value ~ depth^{report['ra4']['exponent']:.2f}")
    print(f"figures and numbers: {out}/alignment_ra2.png, alignment_ra3.png, alignment_ra4.png, alignment.json")


def _landscape(args: argparse.Namespace, out: str) -> None:
    from ..analysis.landscape import run_landscape

    report = run_landscape(out, quick=args.quick, data=args.data, data_root=args.data_root,
                           depths=tuple(args.depth) if args.depth else None, epochs=args.epochs, subset=args.subset,
                           images=args.images, seed=args.seed, progress=not args.no_progress)
    for n in report["networks"]:
        print(f"{n['label']:<12} training loss {n['loss']:.3f} on {report['images']} images, top Hessian eigenvalue "
              f"{n['top_hessian_eigenvalue']:.3g}, loss at 1-D α = -0.5 / 1.5: {n['interpolation']['loss'][0]:.3g} / "
              f"{n['interpolation']['loss'][-1]:.3g}")
    print(f"figures and numbers: {out}/landscape.png, {out}/interpolation.png, {out}/landscape.json")


def _cmd_gradients(args: argparse.Namespace) -> None:
    from ..analysis.gradients import analyze_gradients

    out = args.out or f"runs/analyze-gradients-{args.depth}"
    summary = analyze_gradients(out, depth=args.depth, data=args.data, data_root=args.data_root, steps=args.steps,
                                batch_size=args.batch_size)
    for label, s in summary.items():
        print(f"{label:<14} first/last layer gradient norm: at init {s['init']['first_over_last']:.3g}, "
              f"after training {s['trained']['first_over_last']:.3g}")
    print(f"report: {out}/report.md")


def _cmd_lesion(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..analysis.lesion import analyze_lesion
    from ..engine.evaluate import distinct_labels

    paths = [args.checkpoint, *([args.compare] if args.compare else [])]
    checkpoints = dict(zip(distinct_labels(paths), paths))
    out = args.out or str(Path(args.checkpoint).parent / "lesion")
    results = analyze_lesion(checkpoints, out, split=args.split, samples=args.samples, images=args.images,
                             data=args.data, data_root=args.data_root)
    for label, r in results.items():
        singles = [s["accuracy"] for s in r["single"] if s["accuracy"] is not None]
        print(f"{label}: intact {r['intact']:.2f}%, one block deleted: mean {sum(singles) / len(singles):.2f}%, "
              f"worst {min(singles):.2f}%")
    print(f"report: {out}/report.md")


def _cmd_explain(args: argparse.Namespace) -> None:
    from ..analysis.gradcam import explain_image

    result = explain_image(args.checkpoint, args.image, args.out, target=args.target, topk=args.topk)
    if args.json:
        print(json.dumps(result))
        return
    print(", ".join(f"{c} {p:.3f}" for c, p in result["top"]))
    print(f"Grad-CAM for {result['explained']!r}: {result['file']}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from ..analysis.compare import compare

    overrides = dict(args.set)
    for key in ("data", "data_root", "epochs", "subset"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    report = compare(args.configs, args.seeds, args.out, overrides, log=(lambda s: None) if args.json else print,
                     kfold=args.kfold)
    if args.json:
        print(json.dumps(report))
        return
    for name, s in report["summary"].items():
        print(f"{name:<32} {s['mean']:6.2f} ± {s['std']:.2f}%  (95% interval {s['ci95'][0]:.2f} to "
              f"{s['ci95'][1]:.2f}, {s['n']} {'folds' if args.kfold else 'seeds'})")
    key = next(k for k in report if k.startswith("paired_against_"))
    for name, t in report[key].items():
        wilcoxon = "n/a" if t["wilcoxon_p"] is None else f"{t['wilcoxon_p']:.3g}"
        print(f"{name} - {key.removeprefix('paired_against_')}: {t['mean_difference']:+.2f} points, paired t-test "
              f"p = {t['t_test_p']:.3g}, Wilcoxon p = {wilcoxon}, effect size d = {t['effect_size']:.2f}")


def _cmd_ensemble(args: argparse.Namespace) -> None:
    from ..analysis.ensemble import ensemble

    r = ensemble(args.checkpoints, args.data, args.split, args.data_root)
    if args.json:
        print(json.dumps(r))
        return
    print("members: " + ", ".join(f"{a:.2f}%" for a in r["members_top1"]))
    print("ensemble of the first k: " + ", ".join(f"{k + 1}: {a:.2f}%" for k, a in
                                                  enumerate(r["ensemble_top1_by_size"])))
    print(f"mean pairwise disagreement: {r['mean_pairwise_disagreement']:.2f}% of {r['images']} {r['split']} images")


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    _add_statistics(sub)
    _add_experiments(sub)


def _add_statistics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train configurations over the same seeds: mean ± std, 95%% interval, "
                                       "paired t-test and Wilcoxon test")
    p.add_argument("configs", nargs="+", metavar="RECIPE", help="shipped recipes or YAML files (two or more)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 for every configuration")
    p.add_argument("--kfold", type=int, default=0, metavar="K",
                   help="K-fold cross-validation on the training data instead of seeds: accuracy on each held-out "
                        "fold, paired by fold")
    p.add_argument("--data")
    p.add_argument("--data-root")
    p.add_argument("--epochs", type=float)
    p.add_argument("--subset", type=int)
    p.add_argument("--set", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="a training setting for every configuration (repeatable)")
    p.add_argument("--out", default="runs/compare", help="runs and compare.json/png (a rerun resumes)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("ensemble", help="average checkpoints' softmax outputs: accuracy by size, disagreement")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", help="dataset (default: the first checkpoint's)")
    p.add_argument("--data-root")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_ensemble)


def _add_experiments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="the paper's experiments (" + ", ".join(EXPERIMENTS) + "), signal "
                                          "propagation at initialisation (signal), loss landscapes (landscape) and "
                                          "residual alignment (alignment)")
    p.add_argument("name", choices=[*EXPERIMENTS, *ANALYSES])
    p.add_argument("--quick", action="store_true", help="the reduced scale that runs in minutes on a CPU")
    p.add_argument("--data", default="cifar10", help="cifar10 (python batches), an image tree or a .tar.gz of one")
    p.add_argument("--data-root")
    p.add_argument("--epochs", type=float, help="epochs per network (default: the recipe's 10)")
    p.add_argument("--subset", type=int, help="train on N images (class-balanced) for a reduced scale")
    p.add_argument("--depth", type=int, nargs="+", help="the depths to compare (6n+2), instead of the paper's")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--images", type=int, help="landscape: training images each point is evaluated on (default 512, "
                                              "256 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="train every network with N seeds (from --seed): mean ± "
                                                       "std, shaded bands and paired tests")
    p.add_argument("--checkpoint", nargs="+", help="alignment: trained CIFAR networks to measure (default: train "
                                                   "ResNet-20 and plain-20)")
    p.add_argument("--out", help="output folder (default runs/experiment-NAME); a rerun resumes there")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser("analyze", help="gradient flow, lesion study, Grad-CAM")
    what = p.add_subparsers(dest="analysis", required=True)
    g = what.add_parser("gradients", help="per-layer gradient norms, plain against residual, at init and trained")
    g.add_argument("--depth", type=int, default=56)
    g.add_argument("--data", default="digits")
    g.add_argument("--data-root")
    g.add_argument("--steps", type=int, default=300)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--out")
    g.set_defaults(func=_cmd_gradients)

    g = what.add_parser("lesion", help="delete residual blocks at test time (the ensemble view)")
    g.add_argument("checkpoint")
    g.add_argument("--compare", help="a second checkpoint, e.g. the plain twin, on the same figures")
    g.add_argument("--split", default="val", choices=["train", "val", "test"])
    g.add_argument("--samples", type=int, default=10, help="random draws per number of deleted blocks")
    g.add_argument("--images", type=int, help="use N images of the split (class-balanced), for speed")
    g.add_argument("--data", help="dataset (default: the checkpoint's)")
    g.add_argument("--data-root")
    g.add_argument("--out", help="output folder (default: lesion/ beside the checkpoint)")
    g.set_defaults(func=_cmd_lesion)

    g = what.add_parser("explain", help="Grad-CAM heatmap over an image, with the top classes")
    g.add_argument("checkpoint", help="checkpoint, weights file or shipped weights name")
    g.add_argument("image")
    g.add_argument("--target", help="class to explain (default: the predicted one)")
    g.add_argument("--topk", type=int, default=5)
    g.add_argument("--out", help="folder for the PNG (default: beside the image)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_cmd_explain)
