"""Segmentation networks: torchvision's DeepLabv3 and FCN in keys, parameter counts and float64 outputs (main
and auxiliary), outputs at the input's size, and the settings refused."""
import pytest
import torch

import resnets
from resnets import ConfigError
from resnets.models.profile import profile_model

SPECS = {"deeplabv3_resnet50": ('tvseg:deeplabv3_resnet50:{"weights_backbone": null, "aux_loss": true}', True),
         "fcn_resnet50": ('tvseg:fcn_resnet50:{"weights_backbone": null, "aux_loss": false}', False)}



@pytest.mark.parametrize("name", list(SPECS))
def test_segmentation_networks_are_torchvisions(parity_json, filled_outputs, name):
    reference = parity_json("segmentation_reference.json")
    spec, aux = SPECS[name]
    entry = reference[spec]
    model = resnets.create_model(name, num_classes=21, aux_loss=aux)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(entry["keys"]) and ours == entry["keys"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]
    if "outputs" not in entry:
        return
    out = filled_outputs(model, entry["size"])
    assert set(out) == {"out", "aux"}
    for key, y in out.items():
        assert y.shape[-2:] == (entry["size"], entry["size"])  # at the input's size
        expected = torch.tensor(entry["outputs"][key], dtype=torch.float64)  # every 16th pixel
        assert ((y[:, :, ::16, ::16] - expected).abs().max() / expected.abs().max()) < 1e-9


def test_outputs_follow_the_input_size_and_train():
    model = resnets.create_model("fcn_resnet50", num_classes=3, aux_loss=True).train()
    out = model(torch.randn(2, 3, 72, 88))
    assert out["out"].shape == out["aux"].shape == (2, 3, 72, 88)
    (out["out"].mean() + 0.4 * out["aux"].mean()).backward()
    assert model.classifier[0].weight.grad is not None and model.aux_classifier[0].weight.grad is not None
    with torch.no_grad():
        assert "aux" not in resnets.create_model("deeplabv3_resnet101", num_classes=2).eval()(torch.randn(1, 3, 64, 64))


def test_info_counts_backbone_and_heads():
    rows = profile_model(resnets.create_model("deeplabv3_resnet50", aux_loss=True), 64)
    assert [r.name for r in rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "head", "aux"]
    assert sum(r.params for r in rows) == 42_004_074 and rows[-2].output_shape == (21, 8, 8)


def test_bad_segmentation_settings_are_refused():
    with pytest.raises(ConfigError, match="num_classes >= 1"):
        resnets.create_model("deeplabv3_resnet50", num_classes=0)
    with pytest.raises(ConfigError, match="unknown segmentation head 'unet'"):
        resnets.create_model("deeplabv3_resnet50", head="unet")
    with pytest.raises(ConfigError, match="deeplabv3_resnet50 has no setting 'aux'; its settings: backbone, head, "
                                          "num_classes, aux_loss"):
        resnets.create_model("deeplabv3_resnet50", aux=True)


def test_the_classification_trainer_refuses_a_segmentation_network(tmp_path, capsys):
    from resnets.cli import main

    assert main(["train", "--model", "fcn_resnet50", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "fcn_resnet50 is a segmentation network" in err and err.count("\n") == 0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["fcn_resnet18", "deeplabv3_resnet34"])
def test_basic_block_segmentation_networks_at_both_output_strides(name):
    x = torch.randn(2, 3, 40, 56)
    for stride in (8, 16):
        net = resnets.create_model(name, num_classes=5, aux_loss=True, output_stride=stride).eval()
        out = net(x)
        assert out["out"].shape == out["aux"].shape == (2, 5, 40, 56)
        assert net.backbone.feature_info.reduction()[-1] == stride


def test_output_stride_16_halves_the_aspp_rates_and_other_strides_are_refused():
    net = resnets.create_model("deeplabv3_resnet18", output_stride=16)
    rates = [branch[0].dilation[0] for branch in net.classifier[0].convs[1:4]]
    assert rates == [6, 12, 18]
    with pytest.raises(ConfigError, match="output_stride must be 8 or 16, got 32"):
        resnets.create_model("fcn_resnet18", output_stride=32)
