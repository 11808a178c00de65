"""Per-epoch metrics of a run: CSV, JSON lines and (when the tensorboard package is installed) TensorBoard."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("resnets")


class RunLog:
    """Appends one row per epoch to ``metrics.csv``, ``metrics.jsonl`` and TensorBoard events under ``out``."""

    def __init__(self, out: Path, tensorboard: bool = True, history: list[dict[str, Any]] | None = None) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = list(history or [])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.info("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
        self._rewrite()  # a resumed run starts from the checkpoint's history, dropping rows written after it

    def _rewrite(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "w") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        with open(self.out / "metrics.csv", "w", newline="") as f:
            if self.rows:
                w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                w.writeheader()
                w.writerows(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        new = not (self.out / "metrics.csv").stat().st_size
        with open(self.out / "metrics.csv", "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)):
                    self.writer.add_scalar(k.replace("_", "/", 1), v, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
