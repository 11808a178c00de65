"""The ``resnets`` command line. Each subcommand parses its options and calls the library; any
``ResnetsError`` (bad input) is printed as one line, without a traceback, and exits with status 2."""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import sys
import warnings
from typing import Callable, Sequence

from ..errors import ResnetsError
from .engine import key_value

Handler = Callable[[argparse.Namespace], int | None]


def _cmd_list(args: argparse.Namespace) -> None:
    import fnmatch

    from ..models import get_model_spec, list_models

    if args.weights:
        from ..models.loading import describe_shipped, shipped_weights
        from ..models.pretrained import PRETRAINED, describe
        from ..models.source import read_description

        for weights in PRETRAINED.values():
            if fnmatch.fnmatchcase(weights.model, args.pattern):
                print(describe(weights))
        for name, path in shipped_weights().items():
            meta = read_description(path)
            if meta and (fnmatch.fnmatchcase(meta["config"]["model"], args.pattern)
                         or fnmatch.fnmatchcase(name, args.pattern)):
                print(describe_shipped(path, meta))
        return
    for name in list_models(args.pattern):
        spec = get_model_spec(name)
        print(f"{name:<20} {spec.family:<9} {spec.reference:<12} {spec.summary}")


def _cmd_info(args: argparse.Namespace) -> None:
    from ..models import create_model, get_model_spec, list_models
    from ..models.profile import format_profile, profile_model

    if args.model not in list_models():
        return _info_source(args)
    spec = get_model_spec(args.model)
    size = args.input_size or spec.input_size
    if size < 32:
        raise ResnetsError(f"--input-size must be at least 32, got {size}")
    model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans)
    print(format_profile(args.model, profile_model(model, size), size))


def _info_source(args: argparse.Namespace) -> None:
    """``resnets info CHECKPOINT``: what a checkpoint, weights file, shipped name or published tag holds, and
    its network's stages; or what an exported file (ONNX, OpenVINO, ``torch.export``) holds."""
    from pathlib import Path

    from ..deploy.export import describe_exported, exported_file
    from ..models import get_model_spec
    from ..models.loading import shipped_weights
    from ..models.pretrained import PRETRAINED
    from ..models.profile import format_profile, profile_model
    from ..models.source import read_source

    name = args.model
    if exported_file(name):
        print(describe_exported(name))
        return
    if not (Path(name).exists() or name in shipped_weights() or name in PRETRAINED or "://" in name):
        get_model_spec(name)  # neither a model nor a source: the unknown-model error, with its suggestions
    ck = read_source(name)
    print(ck.describe())
    if ck.model is not None:
        size = args.input_size or ck.crop_size or ck.image_size or get_model_spec(ck.model).input_size
        print()
        print(format_profile(ck.model, profile_model(ck.network(), size), size))


def _cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..benchmark import run_bench
    from ..files import atomic_write

    if args.suite == "deploy":
        from ..benchmark.deploy import deploy_table

        table = deploy_table(dict(args.checkpoint), quick=args.quick, compile=not args.no_compile,
                             log=(lambda s: None) if args.json else print, data=args.data, data_root=args.data_root)
        text = json.dumps(table, indent=1)
        if args.plot:
            from ..benchmark.deploy import plot_deploy

            plot_deploy(json.loads(text), Path(args.plot))
        if args.json:
            print(text)
    else:
        if args.checkpoint or args.data:
            raise ResnetsError("--checkpoint and --data belong to the deploy table: resnets bench deploy "
                               "--checkpoint ...")
        text = run_bench(quick=args.quick, compile=not args.no_compile, device=args.device).to_json()
    if args.out:
        atomic_write(Path(args.out), lambda f: f.write(text.encode() + b"\n"))
        print(f"wrote {args.out}", file=sys.stderr if args.json else sys.stdout)


def _cmd_convert(args: argparse.Namespace) -> None:
    from ..convert import convert, describe, summary_json

    result = convert(args.src, args.dest, args.model)
    print(summary_json(result) if args.json else describe(result))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets", description="Residual networks: models, training, analysis and deployment.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--weights", action="store_true", help="list the weights instead: the published ImageNet "
                                                          "tags (reported accuracy, preprocessing, source) and "
                                                          "the CIFAR-10 weights in the package")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="stages, output shapes, parameters and MACs of a model; or what a checkpoint "
                                    "holds (architecture, classes, preprocessing, recipe, provenance), or an "
                                    "exported file")
    p.add_argument("model", help="a registered model, or a checkpoint, weights file, shipped name or published tag, "
                                 "or a file from resnets export or quantize (.onnx, .xml, .pt2)")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the model's own)")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="speed of each inference and training mode against the naive baseline; "
                                     "'deploy': size, speed and accuracy of each way to ship a network")
    p.add_argument("suite", nargs="?", choices=("speed", "deploy"), default="speed")
    p.add_argument("--checkpoint", action="append", type=key_value, default=[], metavar="LABEL=CHECKPOINT",
                   help="deploy: a trained (pruned, distilled) network to add with its accuracy (repeatable)")
    p.add_argument("--data", help="deploy: the data to measure the checkpoints' accuracy on (default: each one's own)")
    p.add_argument("--data-root", help="deploy: where CIFAR batches are, for --data cifar10/cifar100")
    p.add_argument("--json", action="store_true", help="deploy: print the table as JSON")
    p.add_argument("--plot", help="deploy: draw speed against accuracy into this PNG")
    p.add_argument("--quick", action="store_true", help="one small configuration of each part")
    p.add_argument("--no-compile", action="store_true",
                   help="leave out the compiled modes (torch.compile, AOTInductor)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run the suite")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("convert", help="ImageNet weights from TensorFlow.js, Keras, torchvision or timm as a "
                                       "described .safetensors file")
    p.add_argument("src", help="a TF.js layers model.json, a Keras .h5, or a torchvision/timm .pth/.safetensors")
    p.add_argument("dest", help="the .safetensors file to write")
    p.add_argument("--model", default="resnet50", help="the architecture the weights are for")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_cmd_convert)

    from .engine import add_engine_commands

    add_engine_commands(sub)

    from .deploy import add_deploy_commands

    add_deploy_commands(sub)

    from .analysis import add_analysis_commands

    add_analysis_commands(sub)

    from .campaign import add_campaign_command

    add_campaign_command(sub)

    return parser


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (polling its end reports an error)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor (a captured stream)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("resnets: %(message)s"))
    logger = logging.getLogger("resnets")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with warnings.catch_warnings():  # libraries' warnings (deprecations, pickle protocols) are not the user's
            warnings.simplefilter("ignore")
            return int(args.func(args) or 0)
    except ResnetsError as e:
        print(f"resnets {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused: an output path that is a file, no permission, a full disk
        if isinstance(e, BrokenPipeError) and _stdout_closed():  # the reader went away (``resnets list | head``)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            return 141  # 128 + SIGPIPE: stop quietly, as ``ls`` does; another broken pipe is an error below
        where = f"{e.filename}: " if e.filename else ""
        print(f"resnets {args.command}: error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:  # a caller's (or a test's) logging is left as it was
        logger.handlers[:], logger.level, logger.propagate = saved


def one_line(message: object) -> str:
    """An error message as one line, whatever a library put in it (a reason quoted from another tool)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())
