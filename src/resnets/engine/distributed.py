"""Data-parallel training with PyTorch's own engine: ``torchrun --nproc-per-node N -m resnets train ...``
(or ``resnets train --nproc N``, which starts torchrun).

The batch size is the global one: every process draws the same global batch, augments it the same
way (the randomness depends only on seed, epoch and step) and keeps every ``world``-th image from its
rank on. With equal shares, DistributedDataParallel's averaged gradient is the single-process one, so
a run on N processes follows the run on one (exactly so with ``sync_bn``, up to float rounding).
Evaluation gives each process every ``world``-th image and gathers the logits, so each image counts
once. Only rank 0 logs and writes files.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch: every ``world``-th row from ``rank`` on."""
        return x if self.world == 1 else x[self.rank::self.world]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def concat(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows, rank after rank (parts of any length)."""
        return local if self.world == 1 else torch.cat(self._gather(local))

    def gather_shares(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The inverse of ``share`` for ``n`` rows: every rank's rows, back in the original order."""
        if self.world == 1:
            return local
        out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
        for r, part in enumerate(self._gather(local)):
            out[r::self.world] = part
        return out

    def _gather(self, local: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor (on the CPU), in rank order."""
        parts: list[torch.Tensor | None] = [None] * self.world
        dist.all_gather_object(parts, local.cpu())
        return [p for p in parts if p is not None]


def _attempt_store(rank: int, world: int) -> dist.Store | None:
    """Under torchrun, the rendezvous store seen through a prefix of this restart attempt.

    After an elastic restart the new workers meet in the same store as the dead ones, whose keys (gloo's
    listening addresses among them) are still there: without a fresh prefix a new worker can read a dead
    peer's address and fail with "connectFullMesh ... Connection refused".
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return None
    from datetime import timedelta

    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_hosts and rank == 0, timeout=timedelta(minutes=10))
    return dist.PrefixStore(f"resnets/attempt-{attempt}", store)


def init_distributed(device: torch.device) -> Dist:
    """Join the process group that torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        backend, rank = "nccl" if device.type == "cuda" else "gloo", int(os.environ["RANK"])
        store = _attempt_store(rank, world)
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch, on any device (PyTorch's
    ``nn.SyncBatchNorm`` runs on GPUs only): per-channel sums and sums of squares are all-reduced, with
    gradients flowing back through the reduction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable: gradients cross the ranks

        c = x.shape[1]
        xd = x.double()  # E[x^2] - E[x]^2 cancels badly in float32 when the mean is large against the spread
        local = torch.cat([xd.sum((0, 2, 3)), xd.square().sum((0, 2, 3)), xd.new_tensor([x.numel() / c])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # its successor has no autograd yet
            total = all_reduce(local)
        count = total[-1]
        mean = total[:c] / count
        var = (total[c:2 * c] / count - mean.square()).clamp_min(0)
        if self.track_running_stats:
            self._track(mean.detach(), var.detach() * count / (count - 1))
        dtype = torch.promote_types(x.dtype, torch.float32)  # normalise in float32 at least
        mean, var = mean.to(dtype), var.to(dtype)
        y = (x.to(dtype) - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """Move the running statistics towards the global batch's, as ``nn.BatchNorm2d`` does with its own."""
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), m)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` as ``SyncBatchNorm2d``, with its parameters and statistics."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device=child.weight.device if child.affine else None)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            convert_sync_batchnorm(child)
    return model


def launch(nproc: int, argv: Sequence[str], max_restarts: int = 0) -> int:
    """Run ``resnets <argv>`` on ``nproc`` processes of this machine through torchrun; its exit status."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--max-restarts={max_restarts}", "-m", "resnets", *argv]
    return subprocess.call(cmd)
