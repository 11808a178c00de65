"""Batched augmentation and the in-memory loader."""
import pytest
import torch

import resnets
from resnets import ConfigError

from resnets.data import AugmentConfig, BatchAugment, BatchLoader, ImageSet, batch_generator
from resnets.data.augment import normalize, random_crop, random_flip


def _images(n=16, size=8):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = _images()
    y = random_crop(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)


def test_flip_flips_about_half():
    x = _images(1000, 4)
    y = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (y == x.flip(3)).flatten(1).all(1) & ~(y == x).flatten(1).all(1)
    assert 400 < flipped.sum() < 600


def test_normalize_uses_the_given_statistics():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.5, 1.0]))
    assert out[0, :, 0, 0].tolist() == [2.0, 1.0, 0.5]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_normalize_is_the_formula_and_leaves_its_input_alone(dtype):
    x = torch.randint(0, 256, (4, 3, 5, 5)).to(dtype)
    before = x.clone()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    out = normalize(x, mean, std)
    want = (x.double() / 255 - mean.double().view(1, -1, 1, 1)) / std.double().view(1, -1, 1, 1)
    assert out.dtype == torch.float32 and torch.equal(x, before)
    torch.testing.assert_close(out.double(), want, rtol=0, atol=1e-6)


def test_augmentation_depends_only_on_the_generator_seed():
    aug = BatchAugment(AugmentConfig(jitter=0.3, mixup=0.2, cutmix=1.0), (0.5,) * 3, (0.25,) * 3, 10)
    x, y = _images(), torch.arange(16) % 10
    a = aug.train(x, y, batch_generator(1, 2, 3))
    b = aug.train(x, y, batch_generator(1, 2, 3))
    c = aug.train(x, y, batch_generator(1, 2, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_mixup_targets_are_distributions():
    aug = BatchAugment(AugmentConfig(mixup=0.4), (0.5,) * 3, (0.25,) * 3, 10)
    _, target = aug.train(_images(), torch.arange(16) % 10, batch_generator(0, 0, 0))
    assert target.shape == (16, 10)
    torch.testing.assert_close(target.sum(1), torch.ones(16))


def test_random_resized_crop_and_centre_crop_sizes():
    aug = BatchAugment(AugmentConfig(rrc_scale=(0.3, 1.0), crop_size=6), (0.5,) * 3, (0.25,) * 3, 10)
    x, _ = aug.train(_images(), torch.zeros(16, dtype=torch.long), batch_generator(0, 0, 0))
    assert x.shape == (16, 3, 6, 6) and torch.isfinite(x).all()
    assert aug.eval(_images()).shape == (16, 3, 6, 6)


def test_loader_order_depends_on_seed_and_epoch_and_resumes_mid_epoch():
    data = ImageSet(_images(50), torch.arange(50))
    loader = BatchLoader(data, 8, shuffle=True, drop_last=True, seed=5)
    assert len(loader) == 6
    epoch3 = [y for _, y in loader.batches(3)]
    assert all(torch.equal(a, b) for a, b in zip(epoch3, [y for _, y in loader.batches(3)]))
    assert not torch.equal(epoch3[0], next(loader.batches(4))[1])
    assert all(torch.equal(a, b) for a, b in zip(epoch3[2:], [y for _, y in loader.batches(3, start=2)]))
    seen = torch.cat(epoch3)
    assert len(seen.unique()) == 48


def test_alternate_flips_show_each_image_both_ways_every_two_epochs():
    data = ImageSet(_images(64), torch.arange(64))
    plain = {int(y): x for x, y in zip(*next(BatchLoader(data, 64, shuffle=False).batches(0)))}
    loader = BatchLoader(data, 16, shuffle=True, seed=3, alternate_flips=True)

    def flipped(epoch):
        out = {}
        for x, y in loader.batches(epoch):
            for image, label in zip(x, y.tolist()):
                assert torch.equal(image, plain[label]) or torch.equal(image, plain[label].flip(2))
                out[label] = not torch.equal(image, plain[label])
        return out

    e0, e1, e2 = flipped(0), flipped(1), flipped(2)
    assert 16 < sum(e0.values()) < 48  # a random half first
    assert all(e0[k] != e1[k] and e0[k] == e2[k] for k in e0)


def test_loader_shards_across_ranks_without_overlap():
    data = ImageSet(_images(40), torch.arange(40))
    parts = [torch.cat([y for _, y in BatchLoader(data, 5, shuffle=True, seed=1, rank=r, world_size=2).batches(0)])
             for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 20
    assert not set(parts[0].tolist()) & set(parts[1].tolist())


def test_reflect_crop_is_a_window_of_the_mirrored_image():
    x = _images().float() + 1
    y = random_crop(x, 2, torch.Generator().manual_seed(1), pad_mode="reflect")
    mirrored = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(len(x)):
        windows = [mirrored[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)
    assert (y != 0).all()  # no zero border from reflected padding (the images are >= 1)



def test_repeated_augmentation_keeps_the_epoch_and_repeats_each_image():
    n = 700
    data = ImageSet(_images(n, 4), torch.arange(n))  # the label names the image
    loader = BatchLoader(data, 64, shuffle=True, drop_last=True, seed=5, repeats=3)
    assert len(loader) == 512 // 64  # timm: an epoch of whole multiples of 256 images, not 3 x 700
    labels = torch.cat([y for _, y in loader.batches(2)])
    groups = labels[:510].view(-1, 3)
    assert (groups == groups[:, :1]).all() and len(set(labels.tolist())) == 171  # 3 consecutive copies of each
    assert torch.equal(torch.cat([y for _, y in loader.batches(2)]), labels)  # the order depends on (seed, epoch)
    assert not torch.equal(torch.cat([y for _, y in loader.batches(3)]), labels)
    tail = torch.cat([y for _, y in loader.batches(2, start=3)])
    assert torch.equal(tail, labels[3 * 64:])  # a resumed epoch goes on with the same images
    x, y = next(iter(loader.batches(2)))
    aug = BatchAugment(AugmentConfig(crop_padding=1, hflip=True), (0.5,) * 3, (0.25,) * 3, n)
    out, _ = aug.train(x, y, batch_generator(0, 2, 0))
    assert not torch.equal(out[0], out[1]) or not torch.equal(out[1], out[2])  # copies are augmented apart


def test_repeats_are_refused_below_one_and_without_shuffling():
    for kwargs in ({"shuffle": True, "repeats": 0}, {"shuffle": False, "repeats": 3}):
        with pytest.raises(ValueError, match="repeats must be >= 1"):
            BatchLoader(ImageSet(_images(8), torch.arange(8)), 4, **kwargs)
    with pytest.raises(ConfigError, match="aug_repeats' must be in \\[1, 16\\]"):
        resnets.make_config(None, aug_repeats=0)


def test_evaluation_at_another_resolution_resizes_then_crops():
    from resnets.data.augment import test_resize

    assert test_resize(256, 224, 288, None) == 329  # the training crop's share: 224 of 256
    assert test_resize(236, 160, 224, 0.95) == 236 and test_resize(32, None, 40, None) == 40
    assert test_resize(100, None, 80, 1.0) == 80
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    fixres = BatchAugment(AugmentConfig(crop_size=24, test_size=28, test_crop_pct=0.875), (0.5,) * 3, (0.25,) * 3, 10)
    crop = fixres.eval_crop(images)  # resized to 32 (28 / 0.875): nothing to resize, a centre crop of 28
    assert crop.shape == (4, 3, 28, 28) and torch.equal(crop, images[..., 2:30, 2:30])
    larger = BatchAugment(AugmentConfig(test_size=40), (0.5,) * 3, (0.25,) * 3, 10).eval_crop(images)
    expected = torch.nn.functional.interpolate(images.float(), size=(40, 40), mode="bilinear", antialias=True)
    assert larger.shape == (4, 3, 40, 40) and larger.dtype == torch.uint8
    assert (larger.float() - expected).abs().max() <= 0.5 + 1e-4  # rounded to whole pixel values
    assert torch.equal(fixres.eval_crop(crop), crop)  # already at the test size (a streamed set decodes there)
