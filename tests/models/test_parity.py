"""Parity with torchvision and timm: key names and shapes, and float64 logits under deterministic weights."""
import pytest
import torch

import resnets


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
def test_logits_match_the_reference_implementation_in_float64(parity_reference, ref_name):
    ref, fill = parity_reference
    model = resnets.create_model(_ours(ref_name)).double().eval()
    model.load_state_dict(fill.fill_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        logits = model(fill.reference_input())
    expected = torch.tensor(ref[ref_name]["logits"], dtype=torch.float64)
    rel = (logits - expected).abs().max() / expected.abs().max()
    assert rel < 1e-9
