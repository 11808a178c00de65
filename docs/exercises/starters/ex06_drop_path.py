"""Exercise 6: stochastic depth (Huang et al. 2016) for a residual branch."""
import torch


def drop_path(branch: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """While training, drop the whole branch of each sample with probability ``p`` and scale the kept ones by
    ``1 / (1 - p)`` so that the expected output is unchanged; in evaluation, return the branch as it is."""
    # TODO 1: in evaluation (or with p == 0) nothing changes
    # TODO 2: one random keep/drop decision per sample, shaped (N, 1, 1, 1) so that it broadcasts
    #         (torch.rand(..., generator=generator) >= p keeps a sample with probability 1 - p)
    # TODO 3: multiply, and divide by the keep probability
    raise NotImplementedError("exercise 6: write drop_path")
