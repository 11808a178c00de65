"""``resnets ensemble CKPT...``: average the softmax outputs of several checkpoints of the same classes on the
same split, and report the accuracy as members are added, each member's own, and how often members disagree."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.sources import labelled_images
from ..engine.checkpoint import model_from_checkpoint
from ..engine.evaluate import check_split, checkpoint_augment, load_checkpoint_and_data, source_name, split_of
from ..engine.predict import predict_logits
from ..errors import ConfigError
from ..models.source import Checkpoint


def member_probabilities(checkpoints: Sequence[str | Path | Checkpoint], data: str | None, split: str,
                         data_root: str | None = None) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """Each checkpoint's softmax on ``split`` (of ``data``, else the first checkpoint's data), the labels, and
    the classes; checkpoints trained on other classes are refused."""
    check_split(split)
    first = load_checkpoint_and_data(checkpoints[0], data, data_root)
    images, labels = labelled_images(split_of(first.dataset, split), len(split_of(first.dataset, split)))
    probs = [predict_logits(first.model, images, first.aug).softmax(1)]
    for path in checkpoints[1:]:  # the images are read once, each member normalises them its own way
        model, ckpt = model_from_checkpoint(path)
        if ckpt["classes"] != first.checkpoint["classes"] or ckpt["in_chans"] != first.checkpoint["in_chans"]:
            raise ConfigError(f"{source_name(path)} predicts other classes (or reads other channels) than "
                              f"{source_name(checkpoints[0])}: compared or ensembled networks need the same ones")
        probs.append(predict_logits(model, images, checkpoint_augment(ckpt)).softmax(1))
    return probs, labels, first.checkpoint["classes"]


def ensemble(checkpoints: list[str], data: str | None = None, split: str = "test",
             data_root: str | None = None) -> dict[str, Any]:
    if len(checkpoints) < 2:
        raise ConfigError("an ensemble needs at least two checkpoints")
    probs, labels, _ = member_probabilities(checkpoints, data, split, data_root)

    def top1(p: torch.Tensor) -> float:
        return 100.0 * (p.argmax(1) == labels).float().mean().item()

    votes = [p.argmax(1) for p in probs]
    n = len(probs)
    disagreement = [[100.0 * (votes[i] != votes[j]).float().mean().item() for j in range(n)] for i in range(n)]
    pairs = [disagreement[i][j] for i in range(n) for j in range(i + 1, n)]
    return {"checkpoints": [str(Path(c)) for c in checkpoints], "split": split, "images": len(labels),
            "members_top1": [top1(p) for p in probs],
            "ensemble_top1_by_size": [top1(torch.stack(probs[:k]).mean(0)) for k in range(1, n + 1)],
            "mean_pairwise_disagreement": sum(pairs) / len(pairs), "disagreement": disagreement}
