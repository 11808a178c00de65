"""Checkpoints: written atomically (temporary file, fsync, rename), read back with ``weights_only=True``."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files import atomic_write
from ..models.loading import META_KEY, read_checkpoint, resolve_weights, save_described


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


META_FIELDS = ("config", "classes", "mean", "std", "in_chans", "image_size", "crop_size")


def save_weights(path: str | Path, ckpt: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """A training checkpoint's model weights as safetensors, described (architecture, classes, input
    normalisation, ``extra``) in the file's metadata, so that it loads like the checkpoint itself."""
    meta = {k: ckpt.get(k) for k in META_FIELDS}
    meta["config"] = {k: ckpt["config"].get(k) for k in ("model", "model_args", "data", "val_size")}
    return save_described(path, ckpt["model"], {**meta, **(extra or {})})


def weights_metadata(path: str | Path) -> dict[str, Any] | None:
    """The description that ``save_weights`` stored in a safetensors file (None for a plain state dict)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            text = (f.metadata() or {}).get(META_KEY)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    return json.loads(text) if text else None


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``resnets train`` (weights only), or weights saved by ``save_weights``
    (a file or a shipped name), with its required entries checked."""
    path = resolve_weights(path)
    if path.suffix == ".safetensors" and path.is_file():
        meta = weights_metadata(path)
        if meta is None:
            raise CheckpointError(f"{path} holds weights without a description (architecture, classes); "
                                  f"load it with create_model(..., pretrained=) or resnets finetune --model")
        return {**meta, "model": read_checkpoint(path)}
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "config", "classes") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a resnets training checkpoint (no {', '.join(missing)})")
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The evaluation model of a training checkpoint (in eval mode, on the CPU) and the checkpoint itself."""
    from ..models import create_model
    from ..models.loading import load_state_dict_into

    from ..models import get_model_spec

    ckpt = load_training_checkpoint(path)
    cfg = ckpt["config"]
    if get_model_spec(cfg["model"]).family == "segmentation":
        raise CheckpointError(f"{path} holds the segmentation network {cfg['model']}: the commands that take a "
                              f"checkpoint take classifiers (load it with resnets.create_model(..., pretrained=True))")
    model = create_model(cfg["model"], num_classes=len(ckpt["classes"]), in_chans=ckpt["in_chans"],
                         **cfg.get("model_args", {}))
    load_state_dict_into(model, ckpt["model"], adapt=False)
    return model.eval(), ckpt


def training_recipe(ckpt: dict[str, Any], source: str | Path, recipe: str | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """The full training settings to go on training the network of ``ckpt`` (read from ``source``) with: the
    recipe it was trained with, or, given ``recipe``, that recipe for its architecture (weights saved without
    their recipe, such as the shipped ones, need it). ``overrides`` (None values ignored: data, data_root ...)
    replace the settings."""
    from .config import TrainConfig, make_config

    cfg = ckpt["config"]
    arch = {"model": cfg["model"], "model_args": cfg.get("model_args", {})}
    given = {k: v for k, v in overrides.items() if v is not None}
    if recipe is not None:
        return make_config(recipe, **{**arch, "val_size": cfg.get("val_size"), **given}).to_dict()
    missing = [f for f in TrainConfig.__dataclass_fields__ if f not in cfg]
    if missing:
        raise CheckpointError(f"{source} carries no training recipe (its weights were saved without one): pass "
                              f"--recipe NAME to train it on (resnets recipes lists them)")
    return {**cfg, **given}


def check_architecture(path: str | Path, model: str) -> None:
    """Refuse a checkpoint or described weights file made for another architecture than ``model``."""
    found = load_training_checkpoint(path)["config"]["model"]
    if found != model:
        raise CheckpointError(f"{path} holds weights for {found}, not {model}")
