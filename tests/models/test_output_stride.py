"""Output stride by dilation: torchvision's dilated ResNets and timm's (basic blocks, ResNet-D, ResNet-RS) in
keys and float64 logits, the feature strides, multi-grid, and the settings refused."""
import pytest
import torch

import resnets
from resnets import ConfigError

# the reference's constructor arguments, as ours
OURS = {"tv:resnet50": ("resnet50", 8), "tv:resnet101": ("resnet101", 16), "timm:resnet18": ("resnet18", 8),
        "timm:resnet50d": ("resnet50d", 16), "timm:resnetrs50": ("resnetrs50", 8)}



@pytest.mark.parametrize("spec", list(OURS))
def test_dilated_networks_equal_their_references(parity_json, filled_outputs, spec):
    reference = parity_json("dilated_reference.json")
    (entry,) = [v for k, v in reference.items() if k.startswith(spec + ":")]
    name, output_stride = OURS[spec]
    model = resnets.create_model(name, output_stride=output_stride)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(entry["keys"]) and ours == entry["keys"]
    if "outputs" not in entry:
        return
    logits = filled_outputs(model, entry["size"])
    expected = torch.tensor(entry["outputs"], dtype=torch.float64)
    assert ((logits - expected).abs().max() / expected.abs().max()) < 1e-9


@pytest.mark.parametrize("output_stride, strides", [(32, [2, 4, 8, 16, 32]), (16, [2, 4, 8, 16, 16]),
                                                    (8, [2, 4, 8, 8, 8])])
def test_feature_maps_have_the_output_stride(output_stride, strides):
    model = resnets.create_model("resnet18", output_stride=output_stride).eval()
    assert model.feature_info.reduction() == strides
    with torch.no_grad():
        outs = model.forward_intermediates(torch.randn(1, 3, 64, 64))
    assert [64 // o.shape[-1] for o in outs] == strides


def test_multi_grid_dilates_the_last_stage_block_by_block():
    model = resnets.create_model("resnet50", output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation for b in model.layer4] == [(2, 2), (4, 4), (8, 8)]
    assert [b.conv2.dilation for b in model.layer3] == [(1, 1)] * 6
    plain = resnets.create_model("resnet50", output_stride=8)
    # torchvision: the first block of a dilated stage keeps the dilation before it
    assert [b.conv2.dilation for b in plain.layer3][:2] == [(1, 1), (2, 2)] and plain.layer4[0].conv2.dilation == (2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"output_stride": 4}, "output_stride must be 8, 16 or 32"),
    ({"output_stride": 16, "multi_grid": (1, 2)}, "one multiplier >= 1 per block of the last stage"),
    ({"multi_grid": (1, 2, 4)}, "multi_grid needs output_stride 8 or 16"),
])
def test_bad_output_strides_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.create_model("resnet50", **kwargs)
    with pytest.raises(ConfigError, match="the CIFAR networks end at stride 4"):
        resnets.create_model("resnet20", output_stride=8)
