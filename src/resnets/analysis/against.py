"""``resnets eval A --against B``: two classifiers of the same classes scored on the same images, paired image by
image: each one's top-1, the difference with its 95% interval, and McNemar's exact test (``stats``). It says how
sure these images make the difference; how the difference varies between training seeds is ``resnets compare``'s
question."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..engine.evaluate import distinct_labels, source_name
from ..files import atomic_write
from ..models.source import Checkpoint, read_source
from .ensemble import member_probabilities
from .stats import paired_accuracy


def compare_on_images(first: str | Path | Checkpoint, second: str | Path | Checkpoint, data: str | None = None,
                      split: str = "test", data_root: str | None = None, out: str | Path | None = None
                      ) -> dict[str, Any]:
    """Both networks in float32 on ``split`` of ``data`` (else the first one's data); with ``out``, writes
    ``against_<split>.json`` there."""
    names = [source_name(first), source_name(second)]
    second = second if isinstance(second, Checkpoint) else read_source(second)  # a bad file fails before the data
    probs, labels, _ = member_probabilities([first, second], data, split, data_root)
    right = [(p.argmax(1) == labels).tolist() for p in probs]
    report = {"first": names[0], "second": names[1], "labels": distinct_labels(names), "split": split,
              **vars(paired_accuracy(*right))}
    if out is not None:
        atomic_write(Path(out) / f"against_{split}.json", lambda f: f.write(json.dumps(report, indent=2).encode()))
    return report


def format_against(r: dict[str, Any]) -> str:
    """The report as a few lines."""
    a, b = r["labels"]
    width = max(len(a), len(b))
    low, high = r["ci95"]
    return "\n".join([
        f"{a:<{width}}  {r['split']} top-1 {r['top1_a']:.2f}%",
        f"{b:<{width}}  {r['split']} top-1 {r['top1_b']:.2f}%   ({r['n']:,} images, the same for both)",
        f"difference (second - first): {r['difference']:+.2f} points, 95% interval {low:+.2f} to {high:+.2f}",
        f"right in both {r['both']:,}, only in {a} {r['only_a']:,}, only in {b} {r['only_b']:,}, "
        f"in neither {r['neither']:,}; McNemar's exact test p = {r['mcnemar_p']:.2g}",
        "(paired on these images: how sure they make the difference, not how it varies between training seeds)"])
