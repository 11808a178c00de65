"""RandAugment: every operation against PIL's on a real-looking image, timm's level ranges, the policy strings,
the batch transform's randomness (seeded, per image) and its place in training."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

import resnets
from resnets import ConfigError
from resnets.data import randaugment as ra
from resnets.data.randaugment import RandAugmentPolicy, op_argument, rand_augment

FILL = (128, 128, 128)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.stack([(xx * 5) % 256, (yy * 6) % 256, ((xx + yy) * 3) % 256], -1)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1)[None].float()


def _one(v):
    return torch.tensor([float(v)])


def _pil(img):
    return torch.from_numpy(np.asarray(img).astype(np.float32)).permute(2, 0, 1)[None]


POINTWISE = [
    ("AutoContrast", ra.auto_contrast, None, ImageOps.autocontrast),
    ("Equalize", ra.equalize, None, ImageOps.equalize),
    ("Invert", ra.invert, None, ImageOps.invert),
    ("Posterize", ra.posterize, 2, lambda im: ImageOps.posterize(im, 2)),
    ("Solarize", ra.solarize, 100, lambda im: ImageOps.solarize(im, 100)),
    *[(f"{name}{f}", fn, f, lambda im, e=enh, f=f: e(im).enhance(f))
      for name, fn, enh in (("Color", ra.color, ImageEnhance.Color), ("Contrast", ra.contrast, ImageEnhance.Contrast),
                            ("Brightness", ra.brightness, ImageEnhance.Brightness),
                            ("Sharpness", ra.sharpness, ImageEnhance.Sharpness)) for f in (0.3, 1.7)],
]


@pytest.mark.parametrize("name, op, arg, pil_op", POINTWISE, ids=[p[0] for p in POINTWISE])
def test_pointwise_operations_equal_pils_to_a_grey_level(image, name, op, arg, pil_op):
    pil, x = image
    ours = op(x, None if arg is None else _one(arg)).round()
    assert (ours - _pil(pil_op(pil))).abs().max() <= 1  # PIL truncates where we round


def test_solarize_add_brightens_the_dark_half_only(image):
    _, x = image
    out = ra.solarize_add(x, _one(50))
    assert torch.equal(out[x >= 128], x[x >= 128]) and torch.equal(out[x < 128], (x[x < 128] + 50).clamp(max=255))


GEOMETRIC = [
    ("Rotate", ra.rotate, 20, lambda im: im.rotate(20, resample=Image.BILINEAR, fillcolor=FILL)),
    ("ShearX", ra.shear_x, 0.2, lambda im: im.transform(im.size, Image.AFFINE, (1, 0.2, 0, 0, 1, 0), Image.BILINEAR,
                                                          fillcolor=FILL)),
    ("ShearY", ra.shear_y, -0.2, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, -0.2, 1, 0), Image.BILINEAR,
                                                           fillcolor=FILL)),
    ("TranslateXRel", ra.translate_x, 0.2, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 9.6, 0, 1, 0),
                                                                    Image.BILINEAR, fillcolor=FILL)),
    ("TranslateYRel", ra.translate_y, 0.3, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, 12),
                                                                    Image.BILINEAR, fillcolor=FILL)),
]


@pytest.mark.parametrize("name, op, arg, pil_op", GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
def test_geometric_operations_map_pixels_as_pil_does(image, name, op, arg, pil_op):
    """The same mapping and fill; pixels differ only where the border cuts them (bilinear weights there)."""
    pil, x = image
    diff = (op(x, _one(arg)).round() - _pil(pil_op(pil))).abs()
    assert diff.mean() < 1.5 and (diff > 8).float().mean() < 0.03


def test_levels_follow_timms_ranges():
    m = torch.tensor([0.0, 5.0, 10.0])
    sign = torch.tensor([1.0, -1.0, 1.0])
    assert op_argument("Rotate", m, sign, False).tolist() == [0, -15, 30]
    assert op_argument("Posterize", m, sign, False).tolist() == [0, 2, 4]
    assert op_argument("Posterize", m, sign, True).tolist() == [4, 2, 0]
    assert op_argument("Solarize", m, sign, True).tolist() == [256, 128, 0]
    assert op_argument("SolarizeAdd", m, sign, False).tolist() == [0, 55, 110]
    assert op_argument("Color", m, sign, False).tolist() == pytest.approx([0.1, 1.0, 1.9])
    assert op_argument("Color", m, sign, True).tolist() == pytest.approx([1.0, 0.55, 1.9])
    assert op_argument("TranslateXRel", m, sign, False).tolist() == pytest.approx([0, -0.225, 0.45])


@pytest.mark.parametrize("text, policy", [
    ("rand-m9-mstd0.5-inc1", RandAugmentPolicy(9, 2, 0.5, 10, True)), ("rand-m7-mstd0.5", RandAugmentPolicy(7, 2, 0.5)),
    ("rand-m6-n3", RandAugmentPolicy(6, 3)), ("rand", RandAugmentPolicy()),
    ("rand-m15-mmax15", RandAugmentPolicy(15, 2, 0, 15))])
def test_timms_policy_strings(text, policy):
    assert RandAugmentPolicy.parse(text) == policy


@pytest.mark.parametrize("text, message", [("auto-m9", "must start with 'rand'"), ("rand-x3", "cannot read 'x3'"),
                                           ("rand-m9-n0", "n must be at least 1"), ("rand-mfoo", "cannot read 'mfoo'")])
def test_bad_policies_are_refused_in_one_line(text, message):
    with pytest.raises(ConfigError, match=message):
        RandAugmentPolicy.parse(text)
    with pytest.raises(ConfigError, match=message):
        resnets.make_config(None, randaugment=text)


def test_the_batch_transform_is_seeded_per_image_and_stays_in_range():
    x = torch.randint(0, 256, (32, 3, 24, 24), dtype=torch.uint8)
    policy = RandAugmentPolicy.parse("rand-m9-mstd0.5-inc1")
    before = x.float()
    assert torch.equal(rand_augment(before, policy, torch.Generator().manual_seed(3)),
                       rand_augment(x, policy, torch.Generator().manual_seed(3)))
    assert torch.equal(before, x.float())  # the input is left alone
    a = rand_augment(x, policy, torch.Generator().manual_seed(3))
    b = rand_augment(x, policy, torch.Generator().manual_seed(3))
    c = rand_augment(x, policy, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 255 and torch.equal(a, a.round())
    changed = (a != x.float()).flatten(1).any(1)
    assert 0.5 < changed.float().mean() < 1  # each of 2 ops applies with p = 0.5: 3/4 of images change


def test_training_takes_a_policy(tmp_path):
    cfg = resnets.make_config("digits", model="resnet20", epochs=1, randaugment="rand-m9-mstd0.5-inc1",
                              out=str(tmp_path / "run"), progress=False, tensorboard=False)
    result = resnets.train(cfg)
    assert result.history[-1]["train_loss"] > 0 and result.test is not None
