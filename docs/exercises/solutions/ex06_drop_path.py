"""Exercise 6: stochastic depth (Huang et al. 2016) for a residual branch."""
import torch


def drop_path(branch: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """While training, drop the whole branch of each sample with probability ``p`` and scale the kept ones by
    ``1 / (1 - p)`` so that the expected output is unchanged; in evaluation, return the branch as it is."""
    if not training or p == 0:
        return branch
    keep = torch.rand((branch.shape[0],) + (1,) * (branch.dim() - 1), generator=generator) >= p
    return branch * keep / (1 - p)
