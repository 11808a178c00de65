"""Every CPU inference engine side by side: the project's modes (PyTorch eager, folded, bfloat16, AOTInductor,
ONNX Runtime, OpenVINO, int8 in each) and OpenVINO with its THROUGHPUT hint as a peer, for ResNet-50 at batch 1
and 16, ResNet-18 at batch 16 and ResNet-20 at batch 256, timed in turns in one process, each as a share of its
number format's matmul peak measured in the same run; which mode the default picks for a small job and for a
large one, and its speed beside the fastest engine. Then top-1 agreement with float32 on real images: the
shipped ResNet-20 on the CIFAR-10 test set (the original pixels), and with ``--imagenet-weights`` an ImageNet
ResNet-50 on the ImageNet sample photos. A running training campaign is paused while it times.

    python bench/engines.py                       # writes bench/results/engines/<cpu isa>.json
    python bench/engines.py --imagenet-weights resnet50.keras_in1k --imagenet-images DIR
    python bench/engines.py --quick --no-compile  # ResNet-20 only, no AOTInductor modes
    python bench/engines.py --table bench/results/engines/avx512_core_amx.json   # the docs' table of a run
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import torch

import resnets
from resnets.benchmark.peaks import matmul_peak
from resnets.inference import available_modes, fastest_mode, get_mode, onnxruntime_available, prepare_inference
from resnets.inference.openvino import openvino_runner
from resnets.machine import cpu_isa, machine_info
from resnets.models.profile import profile_model
from resnets.timing import time_interleaved

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CIFAR10_LOSSLESS, RESULTS, campaign_paused, write_result  # noqa: E402

CONFIGS = (("resnet50", 224, 1), ("resnet50", 224, 16), ("resnet18", 224, 16), ("resnet20", 32, 256))
FORMAT_PEAK = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
CALIBRATION = 32  # images: enough for the speed rows (accuracy is measured on real images below)


def runners(model: torch.nn.Module, x: torch.Tensor, modes: list[str]) -> dict[str, Callable[[], object]]:
    """One call of each mode (and of the OpenVINO modes under the THROUGHPUT hint) on ``x``, first call made."""
    calibration = torch.randn(CALIBRATION, *x.shape[1:])
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for mode in modes:
        record = get_mode(mode)
        fns[mode] = prepare_inference(model, mode, calibration if record.calibrated else x)
        if record.engine == "openvino":
            precision = "float32" if record.number_format == "int8" else record.number_format
            fns[f"{mode} THROUGHPUT"] = openvino_runner(model, precision, "THROUGHPUT",
                                                        calibration if record.calibrated else None)
    for fn in fns.values():
        fn(x)  # compile, convert, calibrate: before any timing
    return {name: (lambda fn=fn: fn(x)) for name, fn in fns.items()}


def speed(name: str, size: int, batch: int, modes: list[str], peaks: dict[str, float], repeats: int
          ) -> dict[str, Any]:
    torch.manual_seed(0)
    model = resnets.create_model(name).eval()
    gflop = 2 * sum(r.macs for r in profile_model(model, size)) / 1e9
    x = torch.randn(batch, 3, size, size)
    timings = time_interleaved(runners(model, x, modes), repeats)
    rows = {}
    for key, t in timings.items():
        fmt = get_mode(key.split()[0]).number_format
        rate = batch / t.median_s
        rows[key] = {"images_per_s": round(rate, 1), "p50_ms": round(1e3 * t.p50_s, 2), "number_format": fmt,
                     "peak_share": round(rate * gflop * 1e9 / peaks[fmt], 3) if fmt in peaks else None}
    small = fastest_mode()
    large = fastest_mode(model=model, shape=(3, size, size), images=math.inf)
    exact = {k: r for k, r in rows.items() if r["number_format"] != "int8"}  # the defaults never change numbers
    best = max(exact, key=lambda k: exact[k]["images_per_s"])
    return {"model": name, "size": size, "batch": batch, "gflop_per_image": round(gflop, 3), "modes": rows,
            "default_small_job": small, "default_large_job": large, "fastest_exact": best,
            "default_vs_fastest_exact": {job: round(rows[m]["images_per_s"] / rows[best]["images_per_s"], 3)
                                         for job, m in (("small", small), ("large", large)) if m in rows},
            "fastest_int8": max((k for k, r in rows.items() if r["number_format"] == "int8"),
                                key=lambda k: rows[k]["images_per_s"], default=None)}


def agreement(modes: list[str], imagenet: str | None, images: str | None) -> dict[str, Any]:
    """compare_modes on real images: top-1, its change from float32 and the share of agreeing answers."""
    from resnets.engine.evaluate import compare_modes

    out: dict[str, Any] = {}
    if CIFAR10_LOSSLESS.is_file():
        rows = compare_modes("resnet20_cifar10", modes, str(CIFAR10_LOSSLESS), split="test", calibration=512)
        out["resnet20_cifar10 on the CIFAR-10 test set"] = [vars(r) for r in rows]
    if imagenet and images:
        rows = compare_modes(imagenet, modes, images, split="test", calibration=32)
        out[f"{imagenet} on {images}"] = [vars(r) for r in rows]
    return out


def check_image_folder(p: argparse.ArgumentParser, folder: Path) -> None:
    """Refuse, before the minutes of timing, an image folder the agreement could not read."""
    from resnets.data.folder import list_image_folder
    from resnets.errors import DataError

    try:
        list_image_folder(folder)
    except DataError as e:
        p.error(f"--imagenet-images: {e}")


def table(record: dict[str, Any]) -> str:
    """A run's speed as a markdown table: one row per mode, one column per configuration, images/s and the
    share of the mode's number-format peak; the defaults in bold."""
    configs = record["speed"]
    names = list(dict.fromkeys(k for c in configs for k in c["modes"]))
    head = [f"{c['model']} {c['size']}px b{c['batch']}" for c in configs]
    lines = ["| mode | format | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for name in names:
        cells = []
        for c in configs:
            r = c["modes"].get(name)
            text = "–" if r is None else f"{r['images_per_s']:,.0f}" + (
                f" ({100 * r['peak_share']:.0f}%)" if r["peak_share"] is not None else "")
            cells.append(f"**{text}**" if name in (c["default_small_job"], c["default_large_job"]) else text)
        fmt = get_mode(name.split()[0]).number_format
        lines.append(f"| `{name.split()[0]}`{' ' + name.split()[1] if ' ' in name else ''} | {fmt} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="ResNet-20 only")
    p.add_argument("--no-compile", action="store_true", help="leave out the AOTInductor modes (minutes to compile)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--imagenet-weights", help="ImageNet ResNet-50 weights (a tag or a file) for the agreement")
    p.add_argument("--imagenet-images", help="a labelled ImageNet image folder for the agreement")
    p.add_argument("--out", default=None)
    p.add_argument("--table", metavar="JSON", help="print the markdown table of an earlier run and stop")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if bool(args.imagenet_weights) != bool(args.imagenet_images):
        p.error("--imagenet-weights and --imagenet-images go together (the agreement needs both)")
    if args.imagenet_images:
        check_image_folder(p, Path(args.imagenet_images))
    modes = [m for m in available_modes(compile=not args.no_compile) if m != "channels_last"]
    configs = CONFIGS[-1:] if args.quick else CONFIGS
    with campaign_paused() as quiet:
        # int8's peak is the fastest of ONNX Runtime's int8 GEMM and oneDNN's: where ONNX Runtime is installed
        formats = [f for f in FORMAT_PEAK if f != "int8" or onnxruntime_available()]
        peaks = {f: matmul_peak(FORMAT_PEAK[f]) for f in formats if any(get_mode(m).number_format == f for m in modes)}
        rows = [speed(name, size, batch, modes, peaks, args.repeats) for name, size, batch in configs]
    record = {"machine": machine_info(), **quiet, "command": "python bench/engines.py " + " ".join(sys.argv[1:]),
              "peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "speed": rows}
    name, out = cpu_isa() or "cpu", args.out or RESULTS / "engines"
    write_result(name, record, out, echo=False)  # the timings are kept whatever the agreement meets
    record["agreement"] = agreement(modes, args.imagenet_weights, args.imagenet_images)
    write_result(name, record, out)


if __name__ == "__main__":
    main()
