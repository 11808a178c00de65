"""torch.hub: every shipped network loads by name from a local clone, with and without its weights."""
from pathlib import Path

import torch

import resnets
from resnets.models.loading import shipped_weights

REPO = Path(__file__).resolve().parents[1]


def test_hub_lists_and_loads_the_shipped_networks():
    for name in shipped_weights():  # every shipped network is an entry
        assert isinstance(torch.hub.load(str(REPO), name, source="local"), torch.nn.Module)
    model = torch.hub.load(str(REPO), "resnet20_cifar10", source="local")
    reference = resnets.Predictor("resnet20_cifar10", mode="eager").model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x))
    assert model.pretrained_cfg["classes"][0] == "airplane" and model.pretrained_cfg["input_size"] == (3, 32, 32)
    untrained = torch.hub.load(str(REPO), "resnet20_cifar10", source="local", pretrained=False)
    with torch.no_grad():
        assert not torch.allclose(untrained.eval()(x), reference(x))
