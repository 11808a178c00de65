"""Grad-CAM: for a network that ends in global pooling and a linear layer, it equals CAM."""
import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import resnets
from resnets.analysis.gradcam import grad_cam, overlay, png_bytes


def test_grad_cam_equals_class_activation_mapping():
    model = resnets.create_model("resnet20", num_classes=5).eval()
    x = torch.randn(3, 32, 32)
    cam, probs = grad_cam(model, x, target=2)
    with torch.no_grad():
        feats = model.forward_features(x[None])
        expected = F.relu(torch.einsum("k,nkhw->nhw", model.fc.weight[2], feats))[None]
    expected = F.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(cam, expected / expected.max(), rtol=1e-4, atol=1e-5)
    assert probs.shape == (5,) and abs(float(probs.sum()) - 1) < 1e-5
    assert model.training is False and all(p.grad is None for p in model.parameters())


def test_default_target_is_the_prediction_and_overlay_is_an_image():
    model = resnets.create_model("resnet18", num_classes=4, in_chans=1).eval()
    x = torch.randn(1, 1, 64, 64)
    cam, probs = grad_cam(model, x)
    assert torch.equal(cam, grad_cam(model, x, target=int(probs.argmax()))[0])
    assert cam.shape == (64, 64) and 0 <= cam.min() and cam.max() <= 1
    image = overlay(torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8), cam)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert Image.open(io.BytesIO(png_bytes(image, size=256))).size == (256, 256)


def test_an_unreadable_image_is_named(tmp_path):
    from resnets import DataError
    from resnets.analysis.gradcam import explain_image

    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(DataError, match=f"^cannot read image {bad}: not a recognised image file$"):
        explain_image("resnet20_cifar10", bad, tmp_path)
    assert list(tmp_path.iterdir()) == [bad]  # nothing written
