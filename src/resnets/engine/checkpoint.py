"""Checkpoints: written atomically (temporary file, fsync, rename), read back with ``weights_only=True``."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files import atomic_write
from ..models.loading import save_described
from ..models.resnet import StagedNet
from ..models.source import DESCRIPTION, Checkpoint, read_source


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``state`` written atomically. It is serialised in memory first: torch's zip writer turns a failed write
    (a full disk) into an unrelated RuntimeError, where the file's own write names the problem."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


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


def save_weights(path: str | Path, ckpt: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """A training checkpoint's model weights as safetensors, described (architecture, classes, input
    normalisation, ``extra``) in the file's metadata, so that it loads like the checkpoint itself."""
    meta = {k: ckpt.get(k) for k in DESCRIPTION}
    meta["config"] = {k: ckpt["config"].get(k) for k in ("model", "model_args", "data", "val_size")}
    return save_described(path, ckpt["model"], {**meta, **(extra or {})})


def load_training_checkpoint(path: str | Path | Checkpoint) -> dict[str, Any]:
    """A checkpoint written by ``resnets train`` (weights only), or described weights (a file, a shipped name, a
    published tag), read through ``read_source`` and given back in the form ``resnets train`` writes."""
    return _known(read_source(path)).as_dict()


def model_from_checkpoint(path: str | Path | Checkpoint, model: str | None = None
                          ) -> tuple[StagedNet, dict[str, Any]]:
    """The evaluation model of a checkpoint (in eval mode, on the CPU) and the checkpoint itself as a dict;
    ``model`` names the architecture of a plain state dict (which is refused without it)."""
    ck = _known(read_source(path, model=model))
    return ck.classifier(), ck.as_dict()


def _known(ck: Checkpoint) -> Checkpoint:
    """``ck``, or the one-line refusal of a plain state dict whose architecture nobody named."""
    if ck.model is not None:
        return ck
    if ck.path.suffix == ".safetensors":
        raise CheckpointError(f"{ck.source} holds weights without a description (architecture, classes): give "
                              f"its architecture (--weights FILE --model NAME, or resnets finetune --from FILE "
                              f"--model NAME)")
    raise CheckpointError(f"{ck.source} is not a resnets training checkpoint (no model, config, classes) but a "
                          f"plain state dict: give its architecture (--weights FILE --model NAME, or resnets "
                          f"finetune --from FILE --model NAME)")


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
        named = ckpt.get("recipe") if isinstance(ckpt.get("recipe"), str) else None
        which = f"--recipe {named} (the recipe it was trained with)" if named else \
            "--recipe NAME to train it on (resnets recipes lists them)"
        raise CheckpointError(f"{source} carries no training recipe (its weights were saved without one): pass "
                              f"{which}")
    return {**cfg, **given}
