"""Export a model to ONNX, OpenVINO, TorchScript or a ``torch.export`` program, with a dynamic batch dimension
and the metadata a deployment needs (class names, input size, normalisation), checked against PyTorch afterwards.

The exported graph takes normalised float32 NCHW images: ``(pixels / 255 - mean) / std`` per channel,
with ``mean`` and ``std`` stored in the file's metadata (``resnets.json`` for TorchScript and exported
programs, the ONNX model's ``metadata_props`` for ONNX, the runtime information under ``resnets`` for an
OpenVINO network, whose .xml file has its weights in a .bin file of the same name beside it).
"""
from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..engine.checkpoint import model_from_checkpoint, save_weights
from ..errors import ResnetsError
from ..files import atomic_write
from ..inference.onnx import export_onnx, onnx_runner, set_onnx_metadata
from ..inference.openvino import (check_ir_name, ir_metadata, ir_runner, save_ir, set_ir_metadata, set_model_api_info,
                                  to_openvino)

GRAPH_FORMATS = ("onnx", "openvino", "torchscript", "exported-program")
FORMATS = (*GRAPH_FORMATS, "safetensors")  # safetensors: the weights and their description, for this library
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt", "exported-program": ".pt2",
          "safetensors": ".safetensors"}
# the exported formats known by their names alone: a .pt is a checkpoint first (TorchScript is a zip archive as it is)
NAMED = {SUFFIX[f]: f for f in ("onnx", "openvino", "exported-program")}
KIND = {"onnx": "an ONNX file", "openvino": "an OpenVINO network", "torchscript": "a TorchScript file",
        "exported-program": "a torch.export program"}
META_FILE = "resnets.json"
TOLERANCE = 1e-4  # float32 exports agree with PyTorch to this (max absolute difference of the logits)


def exported_format(path: str | Path) -> str:
    """Which of ``GRAPH_FORMATS`` a file is, from its contents (not its name)."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return "openvino" if f.read(64).lstrip().startswith((b"<?xml", b"<net")) else "onnx"
    with zipfile.ZipFile(path) as z:
        return "exported-program" if any(n.endswith("/archive_format") for n in z.namelist()) else "torchscript"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata that ``export`` stored in an exported file (ONNX, OpenVINO, TorchScript or ``torch.export``):
    the network, class names, input size and channels, mean and std, and how an int8 file was quantized.
    A damaged file (or an OpenVINO network without its .bin) raises one ``ResnetsError`` line."""
    fmt = exported_format(path)
    try:
        return _metadata(path, fmt)
    except ResnetsError:
        raise
    except Exception as e:  # each runtime's own parse error: one line, not a traceback
        raise ResnetsError(_unreadable(path, fmt, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}")) from None


def _metadata(path: str | Path, fmt: str) -> dict[str, Any]:
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        if not model.graph.node:  # an empty file parses as an empty model
            raise ResnetsError(_unreadable(path, fmt))
        return {p.key: json.loads(p.value) for p in model.metadata_props}
    if fmt == "openvino":
        return ir_metadata(path)
    files = {META_FILE: ""}
    if fmt == "exported-program":
        torch.export.load(str(path), extra_files=files)
    else:
        torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[META_FILE] or "{}")


def exported_file(path: str | Path) -> str | None:
    """The format of an exported file named as ``export`` names it (``.onnx``, ``.xml``, ``.pt2``), else None:
    a ``.pt`` is taken for a checkpoint, which is a zip archive as TorchScript is. A file so named that does not
    hold that format is an error, not a checkpoint."""
    path = Path(path)
    named = NAMED.get(path.suffix)
    if named is None or not path.is_file():
        return None
    if exported_format(path) != named:
        raise ResnetsError(_unreadable(path, named))
    return named


def _unreadable(path: str | Path, fmt: str, cause: str = "") -> str:
    return (f"cannot read {path} as {KIND[fmt]}: it is empty, damaged or another kind of file"
            f"{f' ({cause})' if cause else ''}; export it again with `resnets export CHECKPOINT --format {fmt}`")


def exported_bytes(path: str | Path) -> int:
    """The size of an exported file, with the .bin of its weights for an OpenVINO network."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if exported_format(path) == "openvino" else 0)


def describe_exported(path: str | Path) -> str:
    """One paragraph for ``resnets info FILE``: an exported file's format, size and stored metadata."""
    path, fmt = Path(path), exported_format(path)
    meta = read_metadata(path)
    classes = meta.get("classes") or []
    shape = f"{meta['in_chans']} x {meta['input_size']} x {meta['input_size']} " if "input_size" in meta else ""
    weights = f" with its weights in {path.with_suffix('.bin').name}" if fmt == "openvino" else ""
    lines = [f"{path}: exported {fmt} file{weights} ({exported_bytes(path) / 2**20:.2f} MB)",
             f"  architecture  {meta.get('model', 'not recorded')}",
             "  predicts      " + (f"{len(classes)} classes ({', '.join(classes[:3])}, ...)" if classes else
                                   "not recorded"),
             f"  input         {shape}{meta.get('input', '(not recorded)')}"
             + (f", mean {meta['mean']} std {meta['std']}" if "mean" in meta and "std" in meta else "")]
    if "quantization" in meta:
        lines.append(f"  quantization  {meta['quantization']}")
    return "\n".join(lines)


def load_exported(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from normalised float32 NCHW images to float32 logits that runs an exported file in its
    runtime: ONNX Runtime, OpenVINO (in float32) or PyTorch."""
    fmt = exported_format(path)
    if fmt == "onnx":
        return onnx_runner(path)
    if fmt == "openvino":
        return ir_runner(path, "float32")
    module = torch.export.load(str(path)).module() if fmt == "exported-program" else torch.jit.load(str(path))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run


def export_model(model: nn.Module, fmt: str, path: str | Path, example: torch.Tensor,
                 meta: dict[str, Any] | None = None, check: bool = True) -> dict[str, Any]:
    """Export ``model`` in ``fmt`` (``GRAPH_FORMATS``) to ``path`` with ``meta``; with ``check``, run the file on
    ``example`` and on a batch of another size and compare with PyTorch (float32, ``TOLERANCE``).

    Returns what was written and measured: the path, format, batch sizes checked and the largest difference.
    """
    if fmt not in GRAPH_FORMATS:
        raise ResnetsError(f"unknown export format {fmt!r}; expected one of {', '.join(GRAPH_FORMATS)}")
    path, meta = Path(path), dict(meta or {})
    if fmt == "openvino":
        check_ir_name(path)
    model = model.eval()
    if fmt == "onnx":
        with tempfile.TemporaryDirectory() as tmp:
            staged = export_onnx(model, example, Path(tmp) / "model.onnx")
            set_onnx_metadata(staged, meta)
            _atomic_bytes(path, staged.read_bytes())
    elif fmt == "openvino":
        try:
            ir = to_openvino(model, tuple(example.shape[1:]))
        except ResnetsError:
            raise
        except Exception as e:
            raise ResnetsError(f"openvino export failed: {type(e).__name__}: {e}") from None
        set_ir_metadata(ir, meta)
        set_model_api_info(ir, meta)
        save_ir(ir, path)
    else:
        _save_torch(model, fmt, path, example, {META_FILE: json.dumps(meta)})
    result: dict[str, Any] = {"path": str(path), "format": fmt, "metadata": meta}
    if check:
        result.update(_check(model, fmt, path, example))
    return result


def _save_torch(model: nn.Module, fmt: str, path: Path, example: torch.Tensor, extra: dict[str, str]) -> None:
    """A TorchScript or ``torch.export`` archive of ``model`` with the ``extra`` files, written atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"model{SUFFIX[fmt]}"
        try:
            if fmt == "torchscript":
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.jit.save(torch.jit.trace(model, example), str(staged), _extra_files=extra)
            else:
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, str(staged), extra_files=extra)
        except Exception as e:
            raise ResnetsError(f"{fmt} export failed: {type(e).__name__}: {e}") from None
        _atomic_bytes(path, staged.read_bytes())


def _check(model: nn.Module, fmt: str, path: Path, example: torch.Tensor) -> dict[str, Any]:
    """Run the file at ``path`` on ``example`` and on a batch of another size against ``model``; an error
    beyond ``TOLERANCE``."""
    run = load_exported(path)
    other = torch.cat([example, example.flip(0)])[: len(example) + 1 if len(example) > 1 else 2]
    diffs = []
    for x in (example, other):
        with torch.no_grad():
            diffs.append((run(x) - model(x)).abs().max().item())
    if not max(diffs) <= TOLERANCE:
        raise ResnetsError(f"the exported {fmt} file disagrees with PyTorch: max |difference| {max(diffs):.2e} "
                           f"> {TOLERANCE:g}")
    return {"checked_batches": [len(example), len(other)], "max_abs_diff": max(diffs)}


def _atomic_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def checkpoint_metadata(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a deployment needs to feed an exported model and read its output."""
    size = ckpt.get("crop_size") or ckpt["image_size"]
    return {"model": ckpt["config"]["model"], "classes": ckpt["classes"], "in_chans": ckpt["in_chans"],
            "input_size": size, "mean": ckpt["mean"], "std": ckpt["std"],
            "input": "float32 NCHW, (pixels / 255 - mean) / std per channel"}


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path | None = None, check: bool = True,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export a training checkpoint's model with its metadata (see ``export_model``); ``out`` defaults to
    the checkpoint's name with the format's suffix. ``safetensors`` writes the weights with the
    checkpoint's description (and ``extra``), which every ``resnets`` command loads like the checkpoint."""
    if fmt not in FORMATS:
        raise ResnetsError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    model, ckpt = model_from_checkpoint(checkpoint)
    meta = {**checkpoint_metadata(ckpt), **(extra or {})}
    size = meta["input_size"]
    example = torch.randn(2, meta["in_chans"], size, size, generator=torch.Generator().manual_seed(0))
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(SUFFIX[fmt])
    named = next((f for f, suffix in SUFFIX.items() if out.suffix == suffix and f != fmt), None)
    if named is not None:  # a file whose name says another format would be read as that one, and fail
        raise ResnetsError(f"{out} is named as {named}, but the format is {fmt}: name it "
                           f"{out.with_suffix(SUFFIX[fmt]).name} or pass --format {named}")
    if fmt != "safetensors":
        return export_model(model, fmt, out, example, meta, check)
    save_weights(out, ckpt, extra)
    result: dict[str, Any] = {"path": str(out), "format": fmt, "metadata": meta}
    if check:
        reloaded, _ = model_from_checkpoint(out)
        with torch.no_grad():
            diff = (reloaded(example) - model(example)).abs().max().item()
        result.update(checked_batches=[len(example)], max_abs_diff=diff)
        if diff != 0:
            raise ResnetsError(f"the saved weights give other outputs than the checkpoint "
                               f"(max |difference| {diff:.2e})")
    return result
