"""Loading weights safely: tensors only (``weights_only=True`` or safetensors), with clear errors."""
from __future__ import annotations

import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")


WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # weights shipped inside the package
META_KEY = "resnets"  # the safetensors metadata entry that holds a weights file's description (JSON)


def save_described(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> Path:
    """Weights as safetensors with their description (architecture, classes, input normalisation ...) in the
    file's metadata, written atomically."""
    import json

    from safetensors.torch import save

    from ..files import atomic_write

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={META_KEY: json.dumps(dict(meta))})
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


def shipped_weights() -> dict[str, Path]:
    """The pretrained weights that ship with the package, by name (``resnet20_cifar10``, ...)."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def describe_shipped(path: Path, meta: dict[str, Any]) -> str:
    """One line for ``resnets list --weights``: a shipped file's name, test top-1, network, recipe and size, from
    its description ``meta``."""
    return (f"{path.stem:<22} test top-1 {meta['test_top1']:.2f}  {meta['config']['model']}  {meta['image_size']} px  "
            f"{meta['recipe']}, {meta['iterations']:,} iterations  in the package ({path.stat().st_size / 1e6:.2f} MB)")


def resolve_weights(name_or_path: str | Path) -> Path:
    """A shipped weights name (``resnet20_cifar10``), a published weights name (``resnet50.tv2_in1k``: fetched
    once, then cached with its description), a URL (fetched once, verified by the sha256 in ``#sha256=HEX`` or
    in its file name, as torchvision names its files) or a local file path, as a path."""
    from .pretrained import PRETRAINED, described_file

    name = str(name_or_path)
    shipped = shipped_weights()
    if name in shipped:
        return shipped[name]
    if name in PRETRAINED and not Path(name).exists():
        return described_file(PRETRAINED[name])
    if re.match(r"^(https?|file)://", name):
        return _fetch_url(name)
    return Path(name_or_path)


_URL_SHA = re.compile(r"#sha256=([0-9a-f]{64})$")
_NAME_SHA = re.compile(r"-([0-9a-f]{8,64})\.\w+$")  # torchvision's resnet50-0676ba61.pth: a sha256 prefix


def _fetch_url(url: str) -> Path:
    from ..hub import fetch

    given = _URL_SHA.search(url)
    bare = url[:given.start()] if given else url
    sha = given[1] if given else None
    if sha is None:
        in_name = _NAME_SHA.search(bare.rsplit("/", 1)[-1])
        sha = in_name[1] if in_name else None
    if sha is None:
        raise CheckpointError(f"{url}: a weights URL needs its sha256 to be verified: append #sha256=HEX (the "
                              "file's sha256sum)")
    return fetch([bare], sha, progress=False)


_FILE_SUFFIXES = {"pt", "pth", "bin", "ckpt", "safetensors", "tar"}


def _unknown_tag(path: Path) -> None:
    """Where a missing ``path`` reads as ``model.tag`` of a model with published weights (``resnet50.tv3``), the
    error that lists the model's tags; nothing for anything else (a missing ``resnet50.pth``)."""
    from .pretrained import PRETRAINED, get_weights, split_name

    model, tag = split_name(path.name)
    published = any(w.model == model for w in PRETRAINED.values())
    if len(path.parts) == 1 and tag and tag not in _FILE_SUFFIXES and published:
        get_weights(model, tag)  # a ConfigError: unknown weights, the closest tag, all of the model's tags


def read_checkpoint(path: str | Path) -> dict:
    """Read a ``.pth``/``.pt`` (weights only: no code is ever unpickled) or ``.safetensors`` file, given by
    its path or, for the weights shipped with the package, by name."""
    path = resolve_weights(path)
    if not path.is_file():
        _unknown_tag(path)
        looks_like_a_name = not path.suffix and len(path.parts) == 1
        hint = f" (nor a shipped weights name: {', '.join(sorted(shipped_weights()))})" if looks_like_a_name else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    why = _not_a_torch_file(path) if path.suffix != ".safetensors" else None
    if why:
        raise CheckpointError(f"cannot read checkpoint {path}: {why}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return widen(load_file(str(path), device="cpu"))
        with warnings.catch_warnings():  # torch's warnings about pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_unpickling_message(path, str(e), _pickled_globals(path))) from None
    except Exception as e:  # damaged zip, truncated file, bad safetensors header, ...
        first = str(e).strip().split("\n")[0].split(". ")[0]  # torch's advice paragraphs add nothing here
        raise CheckpointError(f"cannot read checkpoint {path}: damaged ({type(e).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def widen(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Half-precision tensors (weights stored in float16 or bfloat16 to be small, as the shipped ones are) as
    float32: the networks are built in float32 and choose their lower-precision modes themselves."""
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state.items()}


def _not_a_torch_file(path: Path) -> str | None:
    """Why ``path`` cannot be what ``torch.save`` writes (a zip archive, or a pickle in the legacy format),
    or None where it could be (and is only damaged)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if not head:
        return "the file is empty"
    if head == b"PK" or head[:1] == pickle.PROTO:
        return None
    return "not a PyTorch weights file (neither a zip archive nor a pickle)"


def _pickled_globals(path: Path) -> list[str]:
    """The Python names a plain pickle file refers to (read with ``pickletools``, which runs nothing); empty for
    a zip archive (torch's own format, whose refusal names them)."""
    import pickletools

    data = path.read_bytes()
    if data[:2] == b"PK":
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a damaged pickle: what was read so far
        pass
    return [n for n in names if not n.startswith("torch.") and n != "collections.OrderedDict"]


def _unpickling_message(path: Path, text: str, globals_: list[str]) -> str:
    """One line from torch's long weights-only refusal: objects that could run code, or not a checkpoint."""
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code or globals_:
        return (f"refused to load {path}: it holds Python objects that a weights file must not "
                f"({code[1] if code else ', '.join(dict.fromkeys(globals_))}), and "
                "loading them could run code; nothing in it was run. If you trust its source, save the weights "
                "alone where it was made (torch.save(model.state_dict(), PATH) or safetensors) and load that")
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
    what = "a plain Python pickle, not what torch.save writes" if "operand" in detail else detail or "unpickling failed"
    return f"cannot read checkpoint {path}: not a PyTorch weights file ({what})"


def extract_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``/``{"model": ...}`` and strip DDP/compile prefixes (``module.``,
    ``_orig_mod.``)."""
    for key in _WRAPPERS:
        if key in obj and isinstance(obj[key], Mapping):
            return extract_state_dict(obj[key])
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        for p in _PREFIXES:
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    if not out:
        raise CheckpointError("the checkpoint holds no tensors")
    return out


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-conv weight ``(out, c, kh, kw)`` to ``in_chans`` input channels.

    One channel: the sum over the pretrained channels (a gray image then gives the same output as that
    image repeated on every channel). More: the channels repeated cyclically and rescaled by ``c / in_chans``
    so that the activation scale is kept.
    """
    c = weight.shape[1]
    if in_chans == c:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)


def _first_conv_key(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.weight"
    return None


def load_state_dict_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, adapt: bool = True) -> list[str]:
    """Load ``state`` into ``model`` by key name, exactly (strict), with an error that names every mismatch.

    With ``adapt``, a first convolution for a different channel count is adapted (``adapt_input_conv``)
    and a classifier of another size (``fc``, or the model's ``head_keys``) is left freshly initialised.
    Returns the keys that were not loaded.
    """
    own = model.state_dict()
    state = dict(state)
    skipped: list[str] = []
    if adapt:
        conv = _first_conv_key(model)
        if conv in state and conv in own and state[conv].shape[1] != own[conv].shape[1]:
            state[conv] = adapt_input_conv(state[conv], own[conv].shape[1])
        for k in getattr(model, "head_keys", ("fc.weight", "fc.bias")):
            if k in state and (k not in own or state[k].shape != own[k].shape):
                del state[k]
                skipped.append(k)
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{label} {len(keys)}: {show(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if keys]
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()},
                          strict=not skipped)
    return skipped


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Load weights from a source (a file, shipped name, published tag or URL) into ``model`` (see
    ``load_state_dict_into``); weights described with other architecture arguments (a pruned network's
    widths) are refused with the way to build their architecture."""
    from .source import read_source

    ck = read_source(path)
    try:
        return load_state_dict_into(model, ck.state_dict)
    except CheckpointError as e:
        if not ck.model_args:
            raise
        raise CheckpointError(f"{path} holds {ck.model} built with other arguments ({', '.join(ck.model_args)}) "
                              f"than the network to load it into ({e}): build it with those arguments, or start "
                              f"from it with resnets finetune --from {path}, which builds its architecture") from None
