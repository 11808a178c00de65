"""Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network").

The student learns from the teachers' softened outputs as well as from the labels:

    loss = α · T² · KL(p_teachers^T ‖ softmax(z_student / T)) + (1 - α) · cross-entropy(z_student, labels)

where ``p_teachers^T`` is the mean over the teachers of ``softmax(z_teacher / T)`` (an ensemble of teachers is
distilled through its averaged probabilities) and ``T²`` keeps the soft term's gradients on the scale of the
hard one as ``T`` changes. Teachers see exactly the student's augmented batch (crops, flips, mixup), brought
to their own input normalisation, and run in inference mode: batch norm folded, in bfloat16 where the
processor computes it natively.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..data import ImageData
from ..errors import ConfigError
from ..inference.modes import prepare_inference
from ..machine import native_bf16
from .checkpoint import model_from_checkpoint


@dataclass
class Teacher:
    """One teacher: its inference runner and the per-channel map from the student's inputs to its own."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    scale: torch.Tensor  # x_teacher = x_student * scale + shift
    shift: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x.float() * self.scale + self.shift).clone()  # clone: a normal tensor, usable in autograd


def load_teachers(paths: Sequence[str], data: ImageData, device: torch.device) -> list[Teacher]:
    """The teacher checkpoints, checked against the student's data (classes, channels, image size)."""
    teachers = []
    for path in paths:
        model, ckpt = model_from_checkpoint(path)
        if len(ckpt["classes"]) != data.num_classes:
            raise ConfigError(f"teacher {path} predicts {len(ckpt['classes'])} classes, the data has "
                              f"{data.num_classes}: distil from a teacher trained on the same classes")
        if ckpt["in_chans"] != data.in_chans:
            raise ConfigError(f"teacher {path} reads {ckpt['in_chans']}-channel images, the data has {data.in_chans}")
        if ckpt["image_size"] != data.image_size:
            raise ConfigError(f"teacher {path} was trained on {ckpt['image_size']}-pixel images, the data has "
                              f"{data.image_size}")
        mean_s, std_s = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (data.mean, data.std))
        mean_t, std_t = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (ckpt["mean"], ckpt["std"]))
        mode = "bf16" if native_bf16(device) else "fused"
        teachers.append(Teacher(str(path), prepare_inference(model.to(device), mode), std_s / std_t,
                                (mean_s - mean_t) / std_t))
    return teachers


def soft_targets(teachers: Sequence[Teacher], x: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teachers' mean probabilities at ``temperature``."""
    return torch.stack([F.softmax(t.logits(x) / temperature, dim=1) for t in teachers]).mean(0)


def distillation_loss(student: torch.Tensor, teacher_probs: torch.Tensor, target: torch.Tensor, *,
                      temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton's loss: ``α T² KL(teacher ‖ student at T) + (1 - α) cross-entropy(student, target)``."""
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise ConfigError(f"distillation needs 0 <= alpha <= 1 and temperature > 0, got {alpha} and {temperature}")
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), teacher_probs, reduction="batchmean")
    hard = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard
