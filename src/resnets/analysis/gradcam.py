"""Grad-CAM (Selvaraju et al., 2017): which parts of an image drove a class score.

The last stage's feature maps ``A_k`` are weighted by the spatial mean of the class score's gradient
with respect to them, summed over channels and rectified: ``relu(sum_k mean(dy_c/dA_k) A_k)``, then
upsampled to the image. Every model of the zoo has ``forward_features``/``forward_head``, so this works
on each of them.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.resnet import StagedNet

if TYPE_CHECKING:
    from ..engine.evaluate import Predictor


def grad_cam(model: StagedNet, x: torch.Tensor, target: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of one normalised image ``x`` (``(C, H, W)`` or ``(1, C, H, W)``) for class ``target``
    (default: the predicted class). Returns the heatmap ``(H, W)`` in [0, 1] and the class probabilities."""
    x = x.unsqueeze(0) if x.dim() == 3 else x
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        feats = model.forward_features(x.float().requires_grad_(False)).detach().requires_grad_(True)
        logits = model.forward_head(feats)
        cls = int(logits.argmax(1)) if target is None else target
        (grad,) = torch.autograd.grad(logits[0, cls], feats)
    model.train(was_training)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam, logits.detach().softmax(1)[0]


def overlay(image: np.ndarray | torch.Tensor, cam: torch.Tensor, alpha: float = 0.45) -> Image.Image:
    """The heatmap ``cam`` (``(H, W)``, [0, 1]) in the 'jet' colour map over a uint8 ``(C, H, W)`` image."""
    from matplotlib import colormaps

    img = torch.as_tensor(image)
    img = img.expand(3, *img.shape[1:]) if img.shape[0] == 1 else img[:3]
    base = img.permute(1, 2, 0).float().numpy() / 255.0
    heat = colormaps["jet"](cam.clamp(0, 1).numpy())[..., :3]
    mixed = (1 - alpha) * base + alpha * heat
    return Image.fromarray((mixed * 255).round().clip(0, 255).astype(np.uint8))


def png_bytes(image: Image.Image, size: int | None = None) -> bytes:
    """``image`` as PNG (nearest-neighbour upscaled to ``size`` pixels wide, for small images)."""
    if size and image.width < size:
        image = image.resize((size, round(size * image.height / image.width)), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Explanation:
    """Grad-CAM of one image: the heatmap, the image as the model saw it, the class explained, the top-k."""

    cam: torch.Tensor  # (H, W) in [0, 1]
    picture: torch.Tensor  # uint8 (C, H, W): the evaluation crop
    explained: str
    top: list[tuple[str, float]]


def explain(predictor: "Predictor", image: torch.Tensor, target: int | None = None, topk: int = 5) -> Explanation:
    """Grad-CAM of a uint8 image ``(C, H, W)`` under a ``Predictor``'s float32 model, for class index
    ``target`` (default: the prediction), with the top-k classes."""
    batch = image.unsqueeze(0)
    cam, probs = grad_cam(predictor.model, predictor.aug.eval(batch), target)
    explained = predictor.classes[int(probs.argmax()) if target is None else target]
    return Explanation(cam, predictor.aug.eval_crop(batch)[0], explained, predictor.top_classes(probs[None], topk)[0])


def explain_image(checkpoint: str | Path, image: str | Path, out: str | Path | None = None, *,
                  target: str | None = None, topk: int = 5) -> dict:
    """Grad-CAM of ``image`` under a checkpoint (or weights name) for class ``target`` (default: the
    prediction): writes ``<out>/<image>_gradcam.png`` (the heatmap over the image, beside the image)
    and returns the top classes and the file written."""
    from ..engine.evaluate import Predictor
    from ..errors import ResnetsError

    predictor = Predictor(checkpoint, mode="fused")
    picture = predictor.load(image)
    if target is not None and target not in predictor.classes:
        raise ResnetsError(f"unknown class {target!r}; the model knows {', '.join(predictor.classes[:10])}"
                           + (", ..." if len(predictor.classes) > 10 else ""))
    result = explain(predictor, picture, None if target is None else predictor.classes.index(target), topk)
    seen = result.picture
    rgb = seen.expand(3, *seen.shape[1:]) if seen.shape[0] == 1 else seen[:3]
    side = Image.new("RGB", (2 * seen.shape[-1], seen.shape[-2]))
    side.paste(Image.fromarray(rgb.permute(1, 2, 0).numpy()), (0, 0))
    side.paste(overlay(seen, result.cam), (seen.shape[-1], 0))
    out = Path(out) if out is not None else Path(image).parent
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{Path(image).stem}_gradcam.png"
    path.write_bytes(png_bytes(side, size=512))
    return {"image": str(image), "explained": result.explained, "file": str(path), "top": result.top}
