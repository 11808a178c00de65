"""The deployment commands: ``resnets export``, ``resnets quantize``, ``resnets prune`` and ``resnets serve``."""
from __future__ import annotations

import argparse
import json

from ..deploy.export import FORMATS
from ..deploy.quantize import ENGINES
from ..inference.onnx import CALIBRATION_METHODS


def _cmd_export(args: argparse.Namespace) -> None:
    from ..deploy.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, check=not args.no_check)
    checked = (f"; checked against PyTorch at batch {' and '.join(map(str, result['checked_batches']))}: "
               f"max |difference| {result['max_abs_diff']:.1e}") if "max_abs_diff" in result else ""
    print(f"wrote {result['path']} ({result['format']}, {len(result['metadata']['classes'])} classes){checked}")


def _cmd_quantize(args: argparse.Namespace) -> None:
    from ..deploy.quantize import quantize_checkpoint

    r = quantize_checkpoint(args.checkpoint, args.out, calibration=args.calibration, method=args.method,
                            split=args.split, data=args.data, data_root=args.data_root, reduce_range=args.reduce_range,
                            engine=args.engine)
    if args.json:
        print(json.dumps(r))
        return
    print(f"wrote {r['out']} (int8, {r['weights']}, calibrated on {r['calibration_images']} training images, "
          f"{r['method']})")
    print(f"{r['split']} top-1 on {r['images']} images: float32 {r['float32']['top1']:.2f}%  "
          f"int8 {r['int8']['top1']:.2f}%  ({r['top1_delta']:+.2f} points)")
    print(f"speed: float32 {r['float32']['images_per_s']:.0f} images/s, int8 {r['int8']['images_per_s']:.0f} "
          f"images/s (x{r['speedup']:.2f}); size {r['size_mb']['float32']:.2f} -> {r['size_mb']['int8']:.2f} MB")


def _cmd_serve(args: argparse.Namespace) -> None:
    from ..errors import ResnetsError
    from ..models.loading import shipped_weights
    from ..deploy.server import ServeConfig, serve

    if args.weights:
        from .engine import weights_source

        source = weights_source(args.weights, args.model)
    else:
        source = args.model or args.checkpoint
    if source is None:
        shipped = shipped_weights()
        if not shipped:
            raise ResnetsError("give a CHECKPOINT or --model NAME (no weights ship with this install)")
        source = next(iter(shipped))
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_upload_mb <= 0:
        raise ResnetsError("--max-batch must be >= 1, --max-wait-ms >= 0 and --max-upload-mb > 0")
    cfg = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb)
    serve(source, args.host, args.port, cfg, mode=args.mode)


def _cmd_prune(args: argparse.Namespace) -> None:
    from ..prune import prune_checkpoint

    r = prune_checkpoint(args.checkpoint, args.out, args.amount, criterion=args.criterion, scope=args.scope,
                         multiple=args.multiple,
                         finetune_epochs=args.finetune_epochs, lr_factor=args.lr_factor, distill=args.distill,
                         data=args.data,
                         data_root=args.data_root, calibration=args.calibration, progress=not args.json,
                         recipe=args.recipe)
    if args.json:
        print(json.dumps(r))
        return
    b, p = r["before"], r["pruned"]

    def top1(t: dict[str, float]) -> str:
        return ", ".join(f"{split} {v:.2f}%" for split, v in t.items())

    print(f"wrote {r['file']} ({r['file_bytes'] / 1e6:.2f} MB): {args.amount:.0%} of the inner channels removed "
          f"({r['criterion']}, {r['scope']})")
    print(f"parameters {b['params']:,} -> {p['params']:,} ({1 - p['params'] / b['params']:.1%} fewer), MACs "
          f"{b['macs']:,} -> {p['macs']:,} ({1 - p['macs'] / b['macs']:.1%} fewer)")
    print(f"top-1: parent {top1(b['top1'])}; pruned {top1(p['top1'])}; batch norm re-estimated "
          f"{top1(r['recalibrated']['top1'])}" + (f"; fine-tuned {r['finetuned']['epochs']:g} epochs"
                                                   f"{' distilled from the parent' if args.distill else ''} "
                                                   f"{top1(r['finetuned']['top1'])}" if "finetuned" in r else ""))


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="remove the inner channels of residual blocks: a smaller dense network, "
                                     "fine-tuned")
    p.add_argument("checkpoint", help="a trained checkpoint (best.pt) or described weights")
    p.add_argument("--amount", type=float, required=True, help="share of the inner channels to remove, in (0, 1)")
    p.add_argument("--criterion", choices=("l1", "bn"), default="l1",
                   help="l1: smallest filter norms; bn: smallest batch-norm scales (Network Slimming)")
    p.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="the same share of every block, or ranked across the network")
    p.add_argument("--multiple", type=int, default=1,
                   help="round each block's kept channels to a multiple of N (8 or 16: kernel-friendly widths)")
    p.add_argument("--finetune-epochs", type=float, default=0, help="fine-tune with the checkpoint's recipe")
    p.add_argument("--recipe", help="fine-tune with this recipe instead (weights saved without one need it: "
                                    "resnets recipes lists them)")
    p.add_argument("--lr-factor", type=float, default=0.1, help="fine-tuning learning rate / the recipe's")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune learning from the parent's outputs too (knowledge distillation, the parent "
                        "as teacher)")
    p.add_argument("--calibration", type=int, default=2048,
                   help="training images to re-estimate batch-norm statistics on after pruning")
    p.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root")
    p.add_argument("--out", required=True, help="the smaller network: a .pt checkpoint or .safetensors weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_prune)


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    _add_prune(sub)
    p = sub.add_parser("export", help="export a checkpoint to ONNX, OpenVINO, TorchScript or a torch.export program")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (ONNX Runtime, OpenVINO, ...); openvino (OpenVINO's own format: an .xml file with "
                        "the weights in a .bin beside it); exported-program (torch.export, PyTorch's own format); "
                        "torchscript (deprecated by PyTorch: prefer exported-program); safetensors "
                        "(the weights with their description)")
    p.add_argument("--out", help="output file (default: the checkpoint's name with .onnx, .xml, .pt2, .pt or "
                                 ".safetensors)")
    p.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("quantize", help="int8 post-training quantization (ONNX Runtime or OpenVINO), accuracy and "
                                        "speed")
    p.add_argument("checkpoint")
    p.add_argument("--engine", choices=ENGINES, default="onnxruntime",
                   help="onnxruntime: an int8 ONNX file (static, ONNX Runtime's calibration); openvino: an int8 "
                        "OpenVINO network (NNCF's post-training quantization), OpenVINO's fastest on CPUs")
    p.add_argument("--calibration", type=int, default=512, help="training images used to calibrate")
    p.add_argument("--method", choices=CALIBRATION_METHODS, help="ONNX Runtime's calibration (default minmax)")
    p.add_argument("--out", help="the int8 file (default: beside the checkpoint, *.int8.onnx, or *.int8.xml with "
                                 "--engine openvino)")
    p.add_argument("--split", choices=("train", "val", "test"), default="val", help="split to measure top-1 on")
    p.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="7-bit weights, which x86 CPUs without VNNI need against saturation (default: on where "
                        "this CPU lacks VNNI; say it for a file meant for another machine)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("serve", help="HTTP prediction service with a web page (FastAPI on uvicorn)")
    p.add_argument("checkpoint", nargs="?", help="training checkpoint or weights file")
    p.add_argument("--weights", help="a weights file or published ImageNet weights (resnets list --weights)")
    p.add_argument("--model", help="with --weights: the architecture they are for (checked); without: a shipped "
                                   "weights name, e.g. resnet20_cifar10 (the default when one ships)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="images run together at most")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest accepted file")
    p.add_argument("--mode", default="auto", help="inference mode (see resnets.deploy.MODES)")
    p.set_defaults(func=_cmd_serve)
