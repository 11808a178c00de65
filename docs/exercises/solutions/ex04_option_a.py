"""Exercise 4: the paper's option A shortcut, which adds no parameters."""
import torch
import torch.nn.functional as F


def pad_shortcut(x: torch.Tensor, out_chs: int, stride: int) -> torch.Tensor:
    """Keep every ``stride``-th pixel in each direction (starting at the first) and append zero channels up to
    ``out_chs``."""
    x = x[:, :, ::stride, ::stride]
    return F.pad(x, (0, 0, 0, 0, 0, out_chs - x.shape[1]))
