"""Run in an environment with torchvision: python bench/detection_check.py

torchvision's FasterRCNN takes resnets' FPN backbone, trains a step and predicts."""
import sys
from pathlib import Path

import torch
from torchvision.models.detection import FasterRCNN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this clone's resnets
import resnets  # noqa: E402

backbone = resnets.create_backbone("resnet50", fpn=True, trainable_layers=3)
model = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=160)
images = [torch.rand(3, 128, 160), torch.rand(3, 144, 128)]
targets = [{"boxes": torch.tensor([[10., 20., 60., 90.]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[5., 5., 50., 40.], [60., 60., 120., 100.]]), "labels": torch.tensor([2, 1])}]
model.train()
losses = model(images, targets)
sum(losses.values()).backward()
print("train losses", {k: round(v.item(), 4) for k, v in losses.items()})
model.eval()
with torch.no_grad():
    out = model(images)
print("eval", [sorted(o) for o in out], torch.__version__, __import__("torchvision").__version__)
