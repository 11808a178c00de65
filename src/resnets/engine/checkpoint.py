"""Checkpoints: written atomically (temporary file, fsync, rename), read back with ``weights_only=True``."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models.loading import read_checkpoint


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``resnets train`` (weights only), with its required entries checked."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "config", "classes") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a resnets training checkpoint (no {', '.join(missing)})")
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The evaluation model of a training checkpoint (in eval mode, on the CPU) and the checkpoint itself."""
    from ..models import create_model
    from ..models.loading import load_state_dict_into

    ckpt = load_training_checkpoint(path)
    cfg = ckpt["config"]
    model = create_model(cfg["model"], num_classes=len(ckpt["classes"]), in_chans=ckpt["in_chans"],
                         **cfg.get("model_args", {}))
    load_state_dict_into(model, ckpt["model"], adapt=False)
    return model.eval(), ckpt
