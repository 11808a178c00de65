"""Exercise 9: start every residual block as the identity (zero-initialised last batch-norm scale)."""
from torch import nn


def zero_init_last_bn(model: nn.Module) -> None:
    """Set the scale of the last batch norm of every residual branch to zero: ``bn2`` of each basic block,
    ``bn3`` of each bottleneck (any module that has a ``downsample`` attribute is a residual block)."""
    for m in model.modules():
        if hasattr(m, "downsample"):
            last = getattr(m, "bn3", None) or m.bn2
            nn.init.zeros_(last.weight)
