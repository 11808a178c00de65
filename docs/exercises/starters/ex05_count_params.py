"""Exercise 5: the parameters of the ImageNet ResNets, counted by hand."""


def resnet_params(block: str, layers: tuple[int, int, int, int], num_classes: int = 1000) -> int:
    """Parameters of torchvision's ResNet with ``block`` "basic" (expansion 1) or "bottleneck" (expansion 4) and
    ``layers`` blocks per stage (widths 64, 128, 256, 512): weights of every convolution (no biases), two per
    batch norm channel (scale and shift), and the classifier's weights and biases."""
    # TODO 1: the stem: a 7x7 convolution from 3 to 64 channels and its batch norm
    # TODO 2: each block's convolutions and batch norms (a 3x3 convolution from a to b channels has 9 * a * b
    #         weights); the first block of a stage whose input shape differs has a 1x1 projection + batch norm
    # TODO 3: the classifier: (final channels) x num_classes weights and num_classes biases
    raise NotImplementedError("exercise 5: write resnet_params")
