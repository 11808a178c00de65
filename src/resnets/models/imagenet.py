"""The 1,000 classes of ImageNet-1k in their standard order (sorted WordNet ids), with readable names (as in
the Keras class index): what ImageNet weights predict, and how ImageNet-style folders (``n01440764/...``) are
labelled."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """``(wnid, name)`` of each class, by index."""
    lines = resources.files("resnets.models").joinpath("imagenet_classes.tsv").read_text().splitlines()[1:]
    return tuple((wnid, name) for _, wnid, name in (line.split("\t") for line in lines))


def imagenet_wnids() -> list[str]:
    return [wnid for wnid, _ in imagenet_classes()]


def imagenet_names() -> list[str]:
    return [name for _, name in imagenet_classes()]
