"""Exercise 7: the learning-rate schedule of the paper's CIFAR-10 experiments (section 4.2)."""


def paper_lr(iteration: int, warmup: bool = False) -> float:
    """0.1, divided by 10 at 32k and at 48k iterations (training stops at 64k). With ``warmup`` (the paper's
    ResNet-110): 0.01 for the first 400 iterations, then back to 0.1."""
    # TODO: read section 4.2 of He et al. (2015) and return the learning rate of this iteration
    raise NotImplementedError("exercise 7: write paper_lr")
