"""Exercise 1: batch normalisation in training mode, by hand."""
import torch


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel of ``x`` (N, C, H, W) by the batch's mean and (biased) variance, then scale by
    ``weight`` and shift by ``bias``; move the running statistics towards the batch's by ``momentum`` (the
    running variance is the unbiased one, as PyTorch keeps it)."""
    # TODO 1: the per-channel mean and biased variance over the batch and both spatial dimensions (0, 2, 3)
    # TODO 2: update running_mean and running_var in place (under torch.no_grad()):
    #         running = (1 - momentum) * running + momentum * batch_statistic;
    #         the running variance uses the unbiased estimate: var * n / (n - 1), n = values per channel
    # TODO 3: x_hat = (x - mean) / sqrt(var + eps), then x_hat * weight + bias (reshape to (1, C, 1, 1))
    raise NotImplementedError("exercise 1: write batch_norm_train")
