"""Augmenting image/mask pairs: one geometry for both, padding ignored, reproducible from the generator."""
import torch

from resnets.data.joint import JointAugment
from resnets.data.masks import IGNORE


def _pair(h=20, w=30):
    # the mask is a function of the image: class = red channel // 50, so any misalignment shows
    red = (torch.arange(h * w) % 5 * 50).view(h, w).to(torch.uint8)
    image = torch.stack([red, red.flip(0), torch.zeros_like(red)])
    return image, red // 50


def test_crops_and_flips_move_image_and_mask_together():
    image, mask = _pair()
    aug = JointAugment(12, (0.5,) * 3, (0.25,) * 3, scale=(1.0, 1.0))
    for seed in range(20):
        x, m = aug.pair(image, mask, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 12, 12) and torch.equal(m, x[0] // 50)


def test_rescaling_keeps_mask_values_and_padding_is_ignored():
    image, mask = _pair(10, 10)
    aug = JointAugment(32, (0.5,) * 3, (0.25,) * 3, scale=(1.5, 2.0))
    x, m = aug.pair(image, mask, torch.Generator().manual_seed(0))
    assert x.shape == (3, 32, 32) and set(m.unique().tolist()) <= {0, 1, 2, 3, 4, IGNORE}
    assert (m == IGNORE).any() and (x[:, m == IGNORE] == 0).all()  # the padding: black, ignored


def test_batches_are_normalised_and_reproducible():
    image, mask = _pair()
    aug = JointAugment(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    a = aug.batch([image, image], [mask, mask], torch.Generator().manual_seed(3))
    b = aug.batch([image, image], [mask, mask], torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (2, 3, 16, 16) and a[1].dtype == torch.long
    assert a[0].min() >= -2 and a[0].max() <= 2 and not torch.equal(a[0][0], a[0][1])
