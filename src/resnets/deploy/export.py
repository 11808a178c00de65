"""Export to ONNX with a dynamic batch dimension, checked against PyTorch after export."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ResnetsError


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 18) -> Path:
    """Write ``model`` (eval mode) as ONNX with input ``images`` and output ``logits``; batch size is dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
        except Exception as e:  # missing onnx package, unsupported operator, ...
            raise ResnetsError(f"ONNX export failed: {type(e).__name__}: {e}") from None
    return path
