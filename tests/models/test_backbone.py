"""Detection backbones: torchvision's resnet_fpn_backbone in keys, trainable parameters and float64 outputs,
frozen batch norm that keeps trained statistics, and the settings refused."""
import pytest
import torch

import resnets
from resnets import ConfigError
from resnets.models.backbone import FrozenBatchNorm2d, freeze_batch_norm




@pytest.mark.parametrize("name, trainable, layers", [("resnet50", 3, [1, 2, 3, 4]), ("resnet18", 5, [2, 3, 4])])
def test_the_fpn_backbone_is_torchvisions(parity_json, filled_outputs, name, trainable, layers):
    reference = parity_json("fpn_reference.json")
    entry = reference[f"tv:resnet_fpn_backbone:{name}:{trainable}:{layers}"]
    backbone = resnets.create_backbone(name, fpn=True, trainable_layers=trainable, returned_layers=layers)
    ours = {k: list(v.shape) for k, v in backbone.state_dict().items()}
    assert list(ours) == list(entry["keys"]) and ours == entry["keys"] and backbone.out_channels == 256
    assert [n for n, p in backbone.named_parameters() if p.requires_grad] == entry["trainable"]
    out = filled_outputs(backbone, 128)
    assert list(out) == list(entry["outputs"])  # "0", "1", ..., "pool"
    for key, y in out.items():
        want = entry["outputs"][key]
        sample = torch.tensor(want["sample"], dtype=torch.float64)
        assert list(y.shape) == want["shape"]
        assert (y[:, :16, ::4, ::4] - sample).abs().max() <= 1e-9 * sample.abs().max()
        assert y.sum().item() == pytest.approx(want["sum"], rel=1e-9)
        assert (y * y).sum().item() == pytest.approx(want["sumsq"], rel=1e-9)


def test_frozen_batch_norm_keeps_trained_statistics_and_never_updates():
    torch.manual_seed(0)
    model = resnets.create_model("resnet18").train()
    model(torch.randn(4, 3, 64, 64))  # statistics that are not the initial ones
    reference = resnets.create_model("resnet18").eval()
    reference.load_state_dict(model.state_dict())
    frozen = freeze_batch_norm(model).train()  # training mode: frozen norms still use the saved statistics
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), reference(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert isinstance(frozen.bn1, FrozenBatchNorm2d) and "bn1.num_batches_tracked" not in frozen.state_dict()


def test_without_fpn_the_frozen_network_gives_its_stage_maps():
    backbone = resnets.create_backbone("resnet50", fpn=False, trainable_layers=0)
    assert not any(p.requires_grad for p in backbone.parameters())
    maps = backbone.forward_intermediates(torch.randn(1, 3, 64, 64), (1, 2, 3, 4))
    assert [m.shape[1] for m in maps] == [256, 512, 1024, 2048]


@pytest.mark.parametrize("kwargs, message", [
    ({"trainable_layers": 6}, "trainable_layers must be in 0..5"),
    ({"returned_layers": [0, 1]}, "returned_layers must be increasing stages among 1..4"),
    ({"returned_layers": [3, 2]}, "returned_layers must be increasing stages among 1..4"),
    ({"norm": "group"}, "norm must be 'frozen' or 'batch'"),
])
def test_bad_backbone_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.create_backbone("resnet18", **kwargs)
    with pytest.raises(ConfigError, match="not an ImageNet ResNet with four stages"):
        resnets.create_backbone("resnet20")
