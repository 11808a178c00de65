"""Parity with torchvision and timm: key names and shapes, and float64 logits under deterministic weights."""
import pytest
import torch

import resnets
from resnets.models.profile import profile_model


def _ours(ref_name: str) -> str:
    return ref_name.split(":", 1)[1]


def test_reference_covers_torchvision_and_timm(parity_reference):
    ref, _ = parity_reference
    assert any(k.startswith("tv:") for k in ref) and any(k.startswith("timm:") for k in ref)


def test_every_reference_model_has_identical_keys_and_shapes(parity_reference):
    ref, _ = parity_reference
    for ref_name, entry in ref.items():
        model = resnets.create_model(_ours(ref_name))
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert list(ours) == list(entry["keys"]), ref_name  # same keys, same order
        assert ours == entry["keys"], ref_name
        assert sum(p.numel() for p in model.parameters()) == entry["num_params"], ref_name


@pytest.mark.parametrize("ref_name", ["tv:resnet18", "tv:resnet50"])
def test_logits_match_the_reference_implementation_in_float64(parity_reference, filled_outputs, ref_name):
    ref, _ = parity_reference
    logits = filled_outputs(resnets.create_model(_ours(ref_name)))
    expected = torch.tensor(ref[ref_name]["logits"], dtype=torch.float64)
    rel = (logits - expected).abs().max() / expected.abs().max()
    assert rel < 1e-9


@pytest.mark.parametrize("depth", [50, 101, 152, 200])
def test_resnet_rs_has_timms_keys_shapes_and_parameter_counts(parity_json, depth):
    ref = parity_json("resnetrs_reference.json")
    entry = ref[f"timm:resnetrs{depth}"]
    model = resnets.create_model(f"resnetrs{depth}")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(entry["keys"]) and ours == entry["keys"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]
    # every parameter belongs to one part of the profile (the strided-conv stem pool is the stem's)
    assert sum(r.params for r in profile_model(model, 64)) == entry["num_params"]
    model.freeze(0)
    assert not any(p.requires_grad for p in model.maxpool.parameters())


def test_resnet_rs_logits_match_timm_in_float64(parity_json, filled_outputs):
    logits = filled_outputs(resnets.create_model("resnetrs50"))
    expected = torch.tensor(parity_json("resnetrs_reference.json")["timm:resnetrs50"]["outputs"], dtype=torch.float64)
    assert ((logits - expected).abs().max() / expected.abs().max()) < 1e-9


@pytest.mark.parametrize("depth, blocks", [(270, (4, 29, 53, 4)), (350, (4, 36, 72, 4)), (420, (4, 44, 87, 4))])
def test_the_deepest_resnet_rs_have_the_papers_stages(depth, blocks):
    """timm's layer counts for the depths the reference does not cover (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = resnets.create_model(f"resnetrs{depth}")
    assert tuple(len(s) for s in model.stages) == blocks and model.maxpool[0].stride == (2, 2)
    assert model.layer1[0].se.fc1.out_channels == 64  # SE at a quarter of the block's 256 output channels
