"""``resnets train``, ``finetune``, ``eval``, ``predict``, ``features``, ``shard`` and ``recipes``; the training
options are ``TrainConfig``'s fields, with their types, choices and help texts."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import yaml

from ..inference import MODES
from ..models.source import Checkpoint, read_source
from ..errors import ConfigError, ResnetsError, yaml_problem
from ..engine.config import TrainConfig, list_recipes, load_recipe, make_config

log = logging.getLogger("resnets")


def _option_kwargs(tp: Any) -> dict[str, Any] | None:
    """argparse settings for a config field's type (None for fields set only through recipes)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"choices": list(args)}
    if tp in (int, float, str):
        return {"type": tp}
    if args and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)][0]
        return _option_kwargs(inner)
    if origin is list:
        return {"type": args[0], "nargs": "+"}
    return None


def key_value(text: str) -> tuple[str, Any]:
    """An option's ``KEY=VALUE`` (the value read as YAML: 0.1 is a number, [1, 2] a list)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"the value of {key} is not valid YAML: {yaml_problem(e)}") from None


def add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help=f"a shipped recipe ({', '.join(list_recipes())}) or a YAML file")
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue a run from its last.pt; 'auto': from the output folder's last.pt if there is one")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes on this machine (starts torchrun)")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="with --nproc: restart the processes this many times after a failure (they resume)")
    p.add_argument("--model-arg", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="extra model argument, e.g. drop_path_rate=0.1 or shortcut=B (repeatable)")
    p.add_argument("--in-memory", dest="stream", action="store_const", const=False, default=argparse.SUPPRESS,
                   help="decode the whole data set into memory, however large (the opposite of --stream)")
    hints, defaults = typing.get_type_hints(TrainConfig), TrainConfig()
    for f in fields(TrainConfig):
        kwargs = _option_kwargs(hints[f.name])
        if kwargs is not None:  # unset options stay out of the namespace: the recipe's values stand
            text = f.metadata["help"].replace("%", "%%")
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                           help=f"{text} (default: {getattr(defaults, f.name)!r})", **kwargs)


def _strip(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not any(a.startswith(o + "=") for o in options):
            out.append(a)
    return out


def _cmd_train(args: argparse.Namespace) -> int | None:
    import os

    from ..engine.train import train

    if args.nproc < 1 or args.max_restarts < 0:
        raise ConfigError(f"--nproc must be >= 1 and --max-restarts >= 0, got {args.nproc} and {args.max_restarts}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # start the job; each process runs this command
        from ..engine.distributed import launch

        argv = _strip(args.argv, ("--nproc", "--max-restarts"))
        if args.max_restarts > 0 and args.resume is None:
            argv += ["--resume", "auto"]  # a restarted process continues from the last checkpoint
        return launch(args.nproc, argv, args.max_restarts)
    if args.resume and args.resume != "auto":
        if _saved_task(args.resume) == "segment":
            _segment(TrainConfig(task="segment"), args.resume)
            return None
        result = train(TrainConfig(), resume=args.resume)
    else:
        overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
        recipe = args.recipe
        if getattr(args, "source", None) is not None:  # resnets finetune --from
            from ..transfer import finetune_config_args

            recipe = recipe or "finetune"
            found = finetune_config_args(args.source, overrides.get("model"))
            overrides.update(model=found["model"], pretrained=found["pretrained"])
            if found["model_args"] and not args.model_arg:
                overrides["model_args"] = found["model_args"]
        elif recipe is None and overrides.get("data") in (None, "digits"):
            recipe = "digits"
        if args.model_arg:
            base = load_recipe(recipe).get("model_args", {}) if recipe else {}
            overrides["model_args"] = {**base, **dict(args.model_arg)}
        cfg = make_config(recipe, **overrides)
        last = cfg.out_dir() / "last.pt"
        resume = last if args.resume == "auto" and last.exists() else None
        if resume is not None:
            _same_run(resume, cfg)
        if cfg.task == "segment":
            _segment(cfg, resume)
            return None
        result = train(cfg, resume=resume)
    if os.environ.get("RANK", "0") != "0":
        return None
    test = f"  test top-1 {result.test.top1:.2f}% ({result.test.n} images)" if result.test else ""
    val = f"val top-1 {result.val.top1:.2f}% ({result.val.n} images)" if result.val else "no validation split"
    print(f"best epoch {result.best_epoch}: {val}{test}"
          f"  [{result.seconds:.0f} s, outputs in {result.out_dir}]")
    return None


def _saved_task(checkpoint: str | Path) -> str:
    from ..engine.checkpoint import load_training_checkpoint

    return str(load_training_checkpoint(checkpoint)["config"].get("task", "classify"))


def _segment(cfg: TrainConfig, resume: str | Path | None) -> None:
    from ..engine.segmentation import train_segmentation

    result = train_segmentation(cfg, resume=resume)
    test = f"  test mIoU {result.test.miou:.2f}% ({result.test.images} images)" if result.test else ""
    print(f"best epoch {result.best_epoch}: val mIoU {result.val.miou:.2f}% pixel accuracy "
          f"{result.val.pixel_acc:.2f}% ({result.val.images} images){test}"
          f"  [{result.seconds:.0f} s, outputs in {result.out_dir}]")


def _same_run(last: Path, cfg: TrainConfig) -> None:
    """``--resume auto`` continues a run as it was set up: a setting given now that differs is refused, not
    silently dropped."""
    from ..engine.checkpoint import load_training_checkpoint
    from ..engine.config import changed_settings

    saved = load_training_checkpoint(last)["config"]
    changed = changed_settings(saved, cfg.to_dict())
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume auto continues the run in {last.parent} as it was set up, with {k}="
                          f"{saved.get(k)!r}, not {getattr(cfg, k)!r}: drop the change, or train it as a new run "
                          f"(another --out, with --pretrained {last} to start from its weights)")


def weights_source(weights: str, model: str | None) -> str | Checkpoint:
    """What ``--weights W [--model M]`` names: a file, a shipped name, or published weights (``--weights
    tv2_in1k --model resnet50``, or ``--weights resnet50.tv2_in1k``); checked against ``M`` when given, and
    read as a plain state dict of ``M`` where it names no architecture itself."""
    from ..models.pretrained import PRETRAINED

    source = f"{model}.{weights}" if model and f"{model}.{weights}" in PRETRAINED and not Path(weights).exists() \
        else weights
    if not model:
        return source
    ck = read_source(source, model=model)
    return ck if ck.kind == "state_dict" else source


def _checkpoint_of(args: argparse.Namespace) -> str | Checkpoint:
    """``resnets eval``'s checkpoint: CHECKPOINT, or --weights checked against --model."""
    if bool(args.checkpoint) == bool(args.weights):
        raise ResnetsError("give a CHECKPOINT or --weights FILE (one of them)")
    if args.model and not args.weights:
        raise ResnetsError("--model goes with --weights (a CHECKPOINT names its architecture)")
    return weights_source(args.weights, args.model) if args.weights else args.checkpoint


def _read_checkpoint(args: argparse.Namespace, checkpoint: str | Checkpoint) -> tuple[Checkpoint, bool]:
    """The checkpoint, read once for all that follows, and whether it segments: ``--task`` says, or, unset,
    the checkpoint itself."""
    from ..models import get_model_spec

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else read_source(checkpoint)
    if args.task is not None:
        return ck, args.task == "segment"
    return ck, bool(ck.model and get_model_spec(ck.model).family == "segmentation")


def _eval_segmentation(args: argparse.Namespace, ck: Checkpoint) -> None:
    from ..engine.segment_metrics import format_seg_metrics
    from ..engine.segment_predict import evaluate_segmentation

    if args.split == "test" and "test" not in (ck.meta.get("splits") or {}):
        args.split = "val"  # segmentation folders rarely have a labelled test split
    m = evaluate_segmentation(ck, args.data, split=args.split, batch_size=min(args.batch_size, 16),
                              device="cpu" if args.device == "auto" else args.device)
    if args.out:
        from ..files import atomic_write

        atomic_write(Path(args.out) / f"metrics_{m.split}.json", lambda f: f.write(json.dumps(m.summary()).encode()))
    print(json.dumps(m.summary()) if args.json else format_seg_metrics(m))


def _eval_against(args: argparse.Namespace, checkpoint: Checkpoint) -> None:
    from ..analysis.against import compare_on_images, format_against

    others = [flag for flag, on in (("--compare-modes", args.compare_modes is not None), ("--tta-flip", args.tta_flip),
                                    ("--tta-translate", args.tta_translate), ("--mode", args.mode != "auto")) if on]
    if others:
        raise ResnetsError(f"--against scores both networks in float32 without test-time augmentation: leave out "
                           f"{', '.join(others)}")
    r = compare_on_images(checkpoint, args.against, args.data, split=args.split, data_root=args.data_root,
                          out=args.out)
    print(json.dumps(r) if args.json else format_against(r))


def _cmd_eval(args: argparse.Namespace) -> None:
    from ..engine.evaluate import compare_modes, evaluate, format_modes
    from ..engine.metrics import format_metrics

    checkpoint, segmenting = _read_checkpoint(args, _checkpoint_of(args))
    if segmenting:
        return _eval_segmentation(args, checkpoint)
    if args.against is not None:
        return _eval_against(args, checkpoint)
    if args.compare_modes is not None:
        rows = compare_modes(checkpoint, args.compare_modes, args.data, split=args.split,
                             batch_size=args.batch_size, data_root=args.data_root, out=args.out)
        print(json.dumps([vars(r) for r in rows]) if args.json else format_modes(rows))
        return
    m = evaluate(checkpoint, args.data, split=args.split, tta_flip=args.tta_flip,
                 tta_translate=args.tta_translate, batch_size=args.batch_size,
                 device=args.device, data_root=args.data_root, out=args.out, mode=args.mode)
    print(json.dumps(m.summary()) if args.json else format_metrics(m))


def _cmd_predict(args: argparse.Namespace) -> None:
    from ..engine.evaluate import Predictor, find_images

    if args.topk < 1 or args.batch_size < 1:
        raise ResnetsError(f"--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}")
    if args.weights:
        checkpoint, images = weights_source(args.weights, args.model), args.inputs
    else:
        checkpoint, images = (args.model, args.inputs) if args.model else (args.inputs[0], args.inputs[1:])
    if not images:
        raise ResnetsError("no images given: resnets predict CHECKPOINT IMAGE... (or --weights FILE IMAGE...)")
    files = find_images(images)
    ck, segmenting = _read_checkpoint(args, checkpoint)
    if segmenting:
        return _predict_segmentation(args, ck, files)
    predictor = Predictor(ck, device=args.device, tta_flip=args.tta_flip, mode=args.mode,
                          images=len(files) * (2 if args.tta_flip else 1))
    done = 0
    for start in range(0, len(files), args.batch_size):
        pairs = [(f, x) for f in files[start:start + args.batch_size]
                 if (x := _read_or_skip(args, f, predictor.load)) is not None]
        if not pairs:
            continue
        import torch

        names, loaded = zip(*pairs)
        done += len(names)
        for f, top in zip(names, predictor.predict_indexed(torch.stack(loaded), args.topk)):
            if args.json:
                print(json.dumps({"file": str(f), "top": [{"class": c, "index": i, "prob": round(p, 6)}
                                                          for i, c, p in top]}))
            else:
                print(f"{f}: " + ", ".join(f"{c} {p:.3f}" for _, c, p in top))
            sys.stdout.flush()
    _none_read(done, files)


def _read_or_skip(args: argparse.Namespace, f: Path, read: Callable[[Path], Any]) -> Any:
    """``read(f)``; where the image cannot be read, None and a warning (with ``--strict``: an error)."""
    from ..data.folder import unreadable

    try:
        return read(f)
    except Exception as e:
        if args.strict:
            raise ResnetsError(f"cannot read image {f}: {unreadable(e)}") from None
        log.warning("skipped %s: %s", f, unreadable(e))
        return None


def _none_read(done: int, files: list[Path]) -> None:
    """An error where not one of ``files`` could be read: nothing was predicted, which is no success."""
    from ..data.folder import IMAGE_EXTS

    if files and not done:
        raise ResnetsError(f"none of the {len(files)} input(s) could be read as an image (see the lines above): "
                           f"give image files ({' '.join(sorted(IMAGE_EXTS))}) or folders of them")


def _predict_segmentation(args: argparse.Namespace, ck: Checkpoint, files: list[Path]) -> None:
    """Each image's classes per pixel: a mask and an overlay PNG in --out, a line of class shares each."""
    from ..data.folder import decode_image
    from ..engine.segment_predict import checkpoint_stats, segment, segmenter, write_prediction

    model, ck = segmenter(ck)
    out = Path(args.out or "predictions")
    mean, std = checkpoint_stats(ck)
    done = 0
    for f in files:
        import torch

        image = _read_or_skip(args, f, lambda p: torch.from_numpy(decode_image(p.read_bytes(), None, keep_shape=True)))
        if image is None:
            continue
        done += 1
        (_, logits), = segment(model, [image], mean, std)
        shares = write_prediction(image, logits, out, f.stem, ck.classes or [])
        if args.json:
            print(json.dumps({"file": str(f), "mask": str(out / f"{f.stem}_mask.png"), "classes": shares}))
        else:
            print(f"{f}: " + ", ".join(f"{c} {p:.1%}" for c, p in sorted(shares.items(), key=lambda kv: -kv[1]))
                  + f"  -> {out / (f.stem + '_mask.png')}")
        sys.stdout.flush()
    _none_read(done, files)


def _cmd_features(args: argparse.Namespace) -> None:
    from ..transfer import features

    result = features(args.checkpoint, args.data, args.out, model=args.model, stage=args.stage,
                      probe=args.linear_probe, subset=args.subset, data_root=args.data_root, val_size=args.val_size,
                      input_size=args.input_size, bf16=args.bf16)
    print(json.dumps(result, indent=2))


def _cmd_shard(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from ..data.make_shards import make_shards, parse_size

    size = parse_size(args.shard_size)
    with tqdm(unit="img", disable=None, dynamic_ncols=True, desc="shards") as bar:
        counts = make_shards(args.src, args.dest, shard_size=size, resize_short=args.resize_short,
                             quality=args.quality, val_size=args.val_size, seed=args.seed, strict=args.strict,
                             progress=bar.update)
    print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} images as shards in {args.dest} "
          f"(train with: resnets train --data {args.dest})")


def add_engine_commands(sub: argparse._SubParsersAction) -> None:
    _add_training(sub)
    _add_data(sub)
    _add_eval(sub)
    _add_predict(sub)


def _add_training(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: ResNet-20 on the embedded digits)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("distill", help="train a student network on the labels and on teachers' softened outputs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", dest="teachers", action="append", required=True, metavar="CHECKPOINT",
                   help="a trained teacher (repeat for an ensemble of teachers)")
    p.add_argument("--student", dest="model", required=True, metavar="MODEL", help="the student architecture")
    add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a pretrained network on new data (a new classifier head)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--from", dest="source", required=True, metavar="CHECKPOINT",
                   help="this project's checkpoint, or a torchvision/timm state dict file (then also --model)")
    add_train_options(p)
    p.set_defaults(func=_cmd_train)



def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="pooled embeddings of every image, and an optional linear probe")
    p.add_argument("checkpoint", help="a checkpoint, a weights file, or published weights (resnet50.keras_in1k)")
    p.add_argument("--data", required=True)
    p.add_argument("--data-root")
    p.add_argument("--model", help="architecture of a plain state dict (this project's checkpoints name theirs)")
    p.add_argument("--out", help="features file (.npz or .safetensors) with labels and file names")
    p.add_argument("--stage", type=int,
                   help="save this feature map instead of pooled features: 0 the stem's, 1..N the stages'")
    p.add_argument("--linear-probe", action="store_true", help="fit a logistic regression and report its accuracy")
    p.add_argument("--subset", type=int, help="use N training images (class-balanced)")
    p.add_argument("--val-size", type=float)
    p.add_argument("--input-size", type=int, help="resize the images to this first (e.g. 224 for ImageNet networks)")
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("shard", help="write an image folder (or a tar of one) as WebDataset shards for streaming",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("src", help="an ImageFolder tree: <split>/<class>/<image> or <class>/<image>, or a .tar(.gz) of one")
    p.add_argument("dest", help="a new folder for <split>-000000.tar ... and dataset.json")
    p.add_argument("--shard-size", default="256MB", help="about this many bytes per shard (e.g. 256MB, 1GB)")
    p.add_argument("--resize-short", type=int, help="re-encode as JPEG with the shorter side at most N pixels")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    p.add_argument("--val-size", type=float, default=0.1,
                   help="without a val/ folder: the validation split held out of train/ (fraction or count; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order of the samples across the shards")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    p.set_defaults(func=_cmd_shard)

    p = sub.add_parser("recipes", help="list the shipped training recipes")
    p.set_defaults(func=lambda a: print("\n".join(list_recipes())))



def _add_weights_option(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("--weights", help="a weights file (e.g. made by resnets convert), a shipped name, or published "
                                     "ImageNet weights (resnets list --weights), instead of CHECKPOINT")
    p.add_argument("--model", help=model_help)


def _add_mode_options(p: argparse.ArgumentParser, auto: str) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--mode", default="auto", choices=["auto", *MODES], help=f"inference mode; auto: {auto}")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy, per-class metrics and confusion matrix of a checkpoint",
                       usage="resnets eval (CHECKPOINT | --weights FILE [--model NAME]) [--data DATA] [options]")
    p.add_argument("checkpoint", nargs="?", help="a training checkpoint or weights file (or give --weights)")
    _add_weights_option(p, "with --weights: the architecture they are for (checked)")
    p.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--tta-translate", action="store_true", help="also average over one-pixel shifts")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", help="folder for metrics JSON and the confusion-matrix PNG")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_mode_options(p, "the fastest float32 one (ONNX Runtime where installed, else batch norm folded), which "
                         "gives the float32 numbers")
    p.add_argument("--task", choices=["classify", "segment"],
                   help="what the checkpoint does (default: what it says); segment: mIoU, pixel accuracy and "
                        "per-class IoU on image/mask pairs (split val unless the data has a test split)")
    p.add_argument("--compare-modes", nargs="*", choices=MODES, metavar="MODE",
                   help="top-1 in each of these inference modes against float32 eager, on the CPU (no MODE: "
                        "the float32, bfloat16 and ONNX Runtime ones); with --out, writes modes_<split>.json")
    p.add_argument("--against", metavar="CHECKPOINT",
                   help="a second network of the same classes, on the same images: both top-1s, the difference "
                        "with its 95%% interval and McNemar's test; with --out, writes against_<split>.json")
    p.set_defaults(func=_cmd_eval)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes of images or folders of images",
                       usage="resnets predict (CHECKPOINT | --model NAME) IMAGE_OR_FOLDER... [options]")
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT IMAGE",
                   help="a checkpoint (unless --weights or --model), then images")
    _add_weights_option(p, "with --weights: the architecture they are for (checked); without: a shipped weights "
                           "name (resnet20_cifar10) or weights file, instead of CHECKPOINT")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta-flip", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_mode_options(p, "bfloat16 where the CPU or GPU runs it natively, else ONNX Runtime's float32 where "
                         "installed, else batch norm folded")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    p.add_argument("--task", choices=["classify", "segment"],
                   help="what the checkpoint does (default: what it says); segment: writes NAME_mask.png (class "
                        "indices, VOC colours) and NAME_overlay.png for each image in --out")
    p.add_argument("--out", help="segment: the folder for the masks and overlays (default: predictions)")
    p.set_defaults(func=_cmd_predict)
