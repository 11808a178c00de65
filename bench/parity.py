"""Parity with the real torchvision and timm models, where they are installed (they are not on the 2-core
CPU machines, whose CPU torch they do not support, but are on the GPU machines):

    python bench/parity.py            # writes bench/results/parity.json

For each model: build theirs with random weights, load its state dict into ours with ``strict=True``
(same keys, same shapes), then compare in float64 on the same input: eval-mode logits, training-mode
logits (batch statistics) and the gradient of every parameter. The unit tests prove the same from
``../shared/reference`` (keys, shapes, and logits of two models) without torchvision.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any

import torch

import resnets
from resnets.machine import machine_info

from common import RESULTS, write_result

MODELS = {
    "torchvision": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                    "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"],
    "timm": ["resnet26d", "resnet50d", "seresnet50"],
}


def _theirs(library: str, name: str) -> torch.nn.Module:
    if library == "torchvision":
        return getattr(importlib.import_module("torchvision.models"), name)(weights=None)
    return importlib.import_module("timm").create_model(name, pretrained=False)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def compare(library: str, name: str, size: int = 160, batch: int = 3) -> dict[str, Any]:
    torch.manual_seed(0)
    theirs = _theirs(library, name).double()
    with torch.no_grad():  # non-trivial batch-norm statistics and affine terms
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    ours = resnets.create_model(name).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(batch, 3, size, size, dtype=torch.float64)
    out: dict[str, Any] = {"params": sum(p.numel() for p in ours.parameters())}
    with torch.no_grad():
        out["eval_logits_rel_diff"] = _rel(ours.eval()(x), theirs.eval()(x))
    grads = []
    for model in (ours.train(), theirs.train()):
        model.zero_grad()
        y = model(x)
        (y * torch.linspace(-1, 1, y.shape[1], dtype=y.dtype)).sum().backward()
        grads.append((y.detach(), {k: p.grad for k, p in model.named_parameters()}))
    out["train_logits_rel_diff"] = _rel(grads[0][0], grads[1][0])
    out["max_grad_rel_diff"] = max(_rel(grads[0][1][k], g) for k, g in grads[1][1].items())
    out["agrees"] = max(out["eval_logits_rel_diff"], out["train_logits_rel_diff"], out["max_grad_rel_diff"]) < 1e-9
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    record: dict[str, Any] = {"machine": machine_info(), "command": "python bench/parity.py", "models": {}}
    for library, names in MODELS.items():
        try:
            lib = importlib.import_module(library)
        except ImportError:
            print(f"{library} is not installed: skipped")
            continue
        record[f"{library}_version"] = lib.__version__
        for name in names:
            record["models"][f"{library}:{name}"] = r = compare(library, name)
            print(f"{library}:{name:<18} eval {r['eval_logits_rel_diff']:.1e}  train {r['train_logits_rel_diff']:.1e}"
                  f"  grads {r['max_grad_rel_diff']:.1e}  {'OK' if r['agrees'] else 'DIFFERS'}", flush=True)
    if record["models"]:
        write_result("parity", record, args.out, echo=False)


if __name__ == "__main__":
    main()
