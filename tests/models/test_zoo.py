"""The named networks: parameter counts, MACs, and every model running forward, backward and through export."""
import pytest
import torch

import resnets
from resnets.models import get_model_spec, list_models
from resnets.models.profile import profile_model

PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962, "resnet1202": 19_421_274,
    # Wide ResNet-28-10 as in Zagoruyko & Komodakis (36.5M); the plain twins equal their residual nets.
    "wrn28_10": 36_479_194, "plain20": 269_722, "plain56": 853_018,
}
GMACS_224 = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51}
HUGE = {"resnet1202", "preact_resnet1001"}  # shape and parameter count only
# the deepest and widest (over 40M parameters, or over 100 layers at 224 pixels) run only in the full suite
BIG = {"resnet101", "resnet152", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "preact_resnet110",
       "wrn28_10", "preact_resnet164", "resnet110", "plain110", "highway110",
       *(f"resnetrs{d}" for d in (101, 152, 200, 270, 350, 420))}
# the classifiers (the segmentation networks have tests of their own: tests/models/test_segmentation.py)
CLASSIFIERS = [n for n in list_models() if get_model_spec(n).family != "segmentation"]


def _sized(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,count", sorted(PARAMS.items()))
def test_parameter_counts_match_torchvision_and_the_paper(name, count):
    assert n_params(resnets.create_model(name)) == count


@pytest.mark.parametrize("name,gmacs", sorted(GMACS_224.items()))
def test_macs_at_224_within_one_percent(name, gmacs):
    rows = profile_model(resnets.create_model(name), 224)
    assert sum(r.macs for r in rows) / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_registry_lists_the_whole_family():
    names = set(list_models())
    expected = {
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
        "wide_resnet50_2", "wide_resnet101_2", "resnet26d", "resnet50d", "seresnet50", "resnetv2_50",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
        "plain20", "plain32", "plain44", "plain56", "plain110",
        "preact_resnet110", "preact_resnet164", "preact_resnet1001", "wrn28_10",
    }
    assert expected <= names
    assert list_models("plain*") == ["plain110", "plain20", "plain32", "plain44", "plain56"]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(resnets.ConfigError, match="did you mean resnet50"):
        resnets.create_model("resnt50")


def test_settings_a_network_does_not_take_are_named():
    with pytest.raises(resnets.ConfigError, match="resnet20 has no setting 'drop_path'; did you mean drop_path_rate"):
        resnets.create_model("resnet20", drop_path=0.1)
    with pytest.raises(resnets.ConfigError, match="fastresnet8 has no setting 'zero_init_last'; its settings: "):
        resnets.create_model("fastresnet8", zero_init_last=True)
    with pytest.raises(resnets.ConfigError,
                       match="feature indices must be in 0..3 \\(0: the stem, 1..3: the stages\\), got \\[4\\]"):
        resnets.create_model("resnet20", features_only=True, out_indices=(4,))


def test_create_classifier_gives_the_staged_api_and_refuses_segmentation_networks():
    from resnets.models import create_classifier
    from resnets.models.resnet import StagedNet

    model = create_classifier("resnet20", num_classes=7)
    assert isinstance(model, StagedNet) and model.num_classes == 7 and model.num_stages == 3
    with pytest.raises(resnets.ConfigError, match="fcn_resnet18 is a SegmentationNet, not a classifier"):
        create_classifier("fcn_resnet18", num_classes=3)


def _forward_backward(model: torch.nn.Module, size: int, in_chans: int = 3) -> torch.Tensor:
    x = torch.randn(2, in_chans, size, size)
    y = model(x)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    return y


@pytest.mark.parametrize("name", _sized(sorted(set(CLASSIFIERS) - HUGE)))
def test_every_model_trains_at_32(name):
    model = resnets.create_model(name, num_classes=7, in_chans=1)
    y = _forward_backward(model, 32, in_chans=1)
    assert y.shape == (2, 7) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", _sized([n for n in list_models() if get_model_spec(n).family == "imagenet"]
                                + ["resnet20", "plain20", "preact_resnet110"]))
def test_model_trains_at_224(name):
    y = _forward_backward(resnets.create_model(name, num_classes=5), 224)
    assert y.shape == (2, 5)


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_models_build_with_the_right_output_shape(name):
    model = resnets.create_model(name).eval()
    assert model.forward_head(torch.zeros(1, model.num_features, 1, 1)).shape == (1, 10)
    assert n_params(model) > 10_000_000


@pytest.mark.parametrize("name", _sized(sorted(set(CLASSIFIERS) - HUGE)))
def test_every_model_exports(name):
    model = resnets.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,millions", [("wrn16_8", 11.0), ("wrn28_10", 36.5), ("wrn40_4", 8.9),
                                           ("preact_resnet164", 1.7), ("preact_resnet1001", 10.2)])
def test_wide_and_preact_sizes_match_their_papers(name, millions):
    assert n_params(resnets.create_model(name)) / 1e6 == pytest.approx(millions, rel=0.015)


@pytest.mark.parametrize("name", ["fastresnet8", "fastplain8", "resnet20"])
def test_profile_counts_every_network_of_the_zoo(name):
    model = resnets.create_model(name)
    rows = profile_model(model, 32)
    assert sum(r.params for r in rows) == n_params(model) and rows[-1].output_shape == (10,)
