"""Exercise 7: the learning-rate schedule of the paper's CIFAR-10 experiments (section 4.2)."""


def paper_lr(iteration: int, warmup: bool = False) -> float:
    """0.1, divided by 10 at 32k and at 48k iterations (training stops at 64k). With ``warmup`` (the paper's
    ResNet-110): 0.01 for the first 400 iterations, then back to 0.1."""
    if warmup and iteration < 400:
        return 0.01
    if iteration < 32_000:
        return 0.1
    return 0.01 if iteration < 48_000 else 0.001
