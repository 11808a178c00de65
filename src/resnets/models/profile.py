"""Counting a network: output shape, parameters and multiply-accumulates of each stage, measured on the model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, cast

import torch
from torch import nn

from .resnet import StagedNet


@dataclass
class StageStats:
    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-accumulates of one conv or linear layer for one image (the convention torchvision reports)."""
    per_image = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    assert isinstance(module, nn.Linear), type(module)
    return per_image * module.in_features


def profile_model(model: nn.Module, input_size: int = 224) -> list[StageStats]:
    """Run one image of ``input_size`` through ``model`` (any network of the zoo) and count each part: stem, each
    stage, head (a segmentation network: its backbone's stem and stages, then its heads)."""
    if not isinstance(model, StagedNet):
        return _profile_segmentation(model, input_size)
    parts: list[tuple[str, Sequence[nn.Module]]] = [
        ("stem", model.stem_modules()),
        *[(f"layer{i + 1}", [s]) for i, s in enumerate(model.stages)],
        ("head", [m for m in (model.norm, model.fc) if m is not None]),
    ]
    macs: dict[int, int] = {}
    owner = {id(sub): i for i, (_, mods) in enumerate(parts) for m in mods for sub in m.modules()}
    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) in owner:
            def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor, i: int = owner[id(m)]) -> None:
                macs[i] = macs.get(i, 0) + layer_macs(mod, out)

            handles.append(m.register_forward_hook(hook))
    shapes: list[tuple[int, ...]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, model.in_chans, input_size, input_size, device=next(model.parameters()).device)
            x = model.forward_stem(x)
            shapes.append(tuple(x.shape[1:]))
            for stage in model.stages:
                x = stage(x)
                shapes.append(tuple(x.shape[1:]))
            shapes.append(tuple(model.forward_head(model.forward_final_norm(x)).shape[1:]))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [
        StageStats(name, shapes[i], sum(p.numel() for m in mods for p in m.parameters()), macs.get(i, 0))
        for i, (name, mods) in enumerate(parts)
    ]


def format_profile(name: str, rows: list[StageStats], input_size: int) -> str:
    """The table that ``resnets info`` prints."""
    lines = [f"{name} at {input_size}x{input_size}", f"{'part':<8} {'output':>16} {'params':>14} {'MACs':>16}"]
    for r in rows:
        lines.append(f"{r.name:<8} {'x'.join(map(str, r.output_shape)):>16} {r.params:>14,} {r.macs:>16,}")
    total_p, total_m = sum(r.params for r in rows), sum(r.macs for r in rows)
    lines.append(f"{'total':<8} {'':>16} {total_p:>14,} {total_m:>16,}  ({total_m / 1e9:.3f} GMACs)")
    return "\n".join(lines)


def _profile_segmentation(model: nn.Module, input_size: int) -> list[StageStats]:
    """A segmentation network's parts: the backbone's stem and stages, then its head and auxiliary head, each
    counted on the maps it reads."""
    backbone = cast(StagedNet, model.backbone)
    rows = [r for r in profile_model(backbone, input_size) if r.name != "head"]
    with torch.no_grad():
        x = torch.zeros(1, backbone.in_chans, input_size, input_size, device=next(model.parameters()).device)
        aux_in, last = backbone.forward_intermediates(x, (3, 4))
    heads = cast(list[tuple[str, "nn.Module | None", torch.Tensor]],
                 [("head", model.classifier, last), ("aux", model.aux_classifier, aux_in)])
    for name, head, inp in heads:
        if head is None:
            continue
        macs = [0]

        def count(mod: nn.Module, _i: object, out: torch.Tensor, macs: list[int] = macs) -> None:
            macs[0] += layer_macs(mod, out)

        hooks = [m.register_forward_hook(count) for m in head.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            was = head.training
            head.eval()
            with torch.no_grad():
                out = head(inp)
            head.train(was)
        finally:
            for h in hooks:
                h.remove()
        rows.append(StageStats(name, tuple(out.shape[1:]), sum(p.numel() for p in head.parameters()), macs[0]))
    return rows
