"""Exercise 5: the parameters of the ImageNet ResNets, counted by hand."""


def resnet_params(block: str, layers: tuple[int, int, int, int], num_classes: int = 1000) -> int:
    """Parameters of torchvision's ResNet with ``block`` "basic" (expansion 1) or "bottleneck" (expansion 4) and
    ``layers`` blocks per stage (widths 64, 128, 256, 512): weights of every convolution (no biases), two per
    batch norm channel (scale and shift), and the classifier's weights and biases."""
    def bn(c: int) -> int:
        return 2 * c

    expansion = 1 if block == "basic" else 4
    total = 3 * 64 * 7 * 7 + bn(64)  # stem
    in_chs = 64
    for stage, blocks in enumerate(layers):
        planes = 64 * 2**stage
        out_chs = planes * expansion
        for i in range(blocks):
            if block == "basic":
                total += in_chs * planes * 9 + bn(planes) + planes * planes * 9 + bn(planes)
            else:
                total += (in_chs * planes + bn(planes) + planes * planes * 9 + bn(planes)
                          + planes * out_chs + bn(out_chs))
            if i == 0 and (stage > 0 or in_chs != out_chs):  # projection shortcut
                total += in_chs * out_chs + bn(out_chs)
            in_chs = out_chs
    return total + in_chs * num_classes + num_classes
