"""Safe loading: weights only, wrappers and prefixes, safetensors, clear mismatch errors, in_chans adaptation."""
import pickle
import warnings
import re

import pytest
import torch
from safetensors.torch import save_file

import resnets
from resnets.models import adapt_input_conv, load_pretrained


@pytest.fixture
def resnet20_state():
    return resnets.create_model("resnet20").state_dict()


def _same_weights(model, state):
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
])
def test_pretrained_pth_wrappers_and_prefixes(tmp_path, resnet20_state, wrap):
    path = tmp_path / "w.pth"
    torch.save(wrap(resnet20_state), path)
    model = resnets.create_model("resnet20", pretrained=path)
    assert _same_weights(model, resnet20_state)


def test_pretrained_safetensors(tmp_path, resnet20_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in resnet20_state.items()}, str(path))
    assert _same_weights(resnets.create_model("resnet20", pretrained=path), resnet20_state)


class Evil:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_that_carries_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(resnets.CheckpointError, match="refused to load .*print.*could run code; nothing "
                                                      "in it was run") as err:
        resnets.create_model("resnet20", pretrained=path)
    assert "code ran" not in capsys.readouterr().out
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_raw_pickle_is_refused(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(resnets.CheckpointError, match="could run code; nothing in it was run"):
        resnets.create_model("resnet20", pretrained=path)
    path.write_bytes(pickle.dumps({"w": 1.0}, protocol=4))  # harmless, but not a torch.save file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning from torch on the way
        with pytest.raises(resnets.CheckpointError, match="a plain Python pickle, not what torch.save writes"):
            resnets.create_model("resnet20", pretrained=path)


@pytest.mark.parametrize("content,why", [(b"", "the file is empty"),
                                         (b"not a checkpoint at all", "neither a zip archive nor a pickle"),
                                         (b"PK\x03\x04garbage", r"damaged \(RuntimeError: .*zip archive")])
def test_corrupt_file_is_a_clear_error(tmp_path, content, why):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(resnets.CheckpointError, match="bad.pth") as err:
        resnets.create_model("resnet20", pretrained=path)
    assert re.search(why, str(err.value)) and "\n" not in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(resnets.CheckpointError, match="not found") as err:
        resnets.create_model("resnet20", pretrained=tmp_path / "nope.pth")
    assert "shipped" not in str(err.value)  # a path: no list of names
    with pytest.raises(resnets.CheckpointError, match="nor a shipped weights name: resnet20_cifar10"):
        resnets.create_model("resnet20", pretrained="resnet20_cifar")  # a mistyped name


def test_a_mistyped_weights_tag_lists_the_model_s_tags(tmp_path, monkeypatch):
    from resnets import ConfigError
    from resnets.models.loading import read_checkpoint

    monkeypatch.chdir(tmp_path)  # (where no file of these names lies)
    with pytest.raises(ConfigError, match=r"unknown weights resnet50.tv2_in1K; did you mean tv2_in1k\? \(tags for"):
        read_checkpoint("resnet50.tv2_in1K")
    for missing in ("resnet50.pth", "resnet20.best", "notes.txt"):  # a file's name, a model without tags, any
        with pytest.raises(resnets.CheckpointError, match=f"checkpoint not found: {missing}$"):
            read_checkpoint(missing)


def test_other_architecture_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "r32.pth"
    torch.save(resnets.create_model("resnet32").state_dict(), path)
    with pytest.raises(resnets.CheckpointError, match=r"unexpected keys \d+: layer1\.3\."):
        resnets.create_model("resnet20", pretrained=path)
    torch.save(resnets.create_model("resnet20").state_dict(), path)
    with pytest.raises(resnets.CheckpointError, match=r"missing keys \d+: layer1\.3\."):
        resnets.create_model("resnet32", pretrained=path)


def test_shape_mismatch_is_named(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(resnets.create_model("resnet20", widths=(16, 32, 128)).state_dict(), path)
    with pytest.raises(resnets.CheckpointError, match=r"shape mismatches .*layer3"):
        resnets.create_model("resnet20", pretrained=path)


def test_new_class_count_keeps_the_backbone_and_replaces_the_head(tmp_path, resnet20_state):
    path = tmp_path / "w.pth"
    torch.save(resnet20_state, path)
    model = resnets.create_model("resnet20", num_classes=3, pretrained=path)
    assert model.fc.out_features == 3
    assert torch.equal(model.layer3[2].conv2.weight, resnet20_state["layer3.2.conv2.weight"])


def test_grayscale_sum_rule_equals_repeated_rgb(tmp_path):
    rgb = resnets.create_model("resnet18").eval()
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    gray = resnets.create_model("resnet18", in_chans=1, pretrained=path).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_more_channels_repeat_and_rescale():
    w = torch.randn(8, 3, 3, 3)
    w4 = adapt_input_conv(w, 4)
    assert w4.shape == (8, 4, 3, 3)
    torch.testing.assert_close(w4[:, :3], w * 0.75)
    torch.testing.assert_close(w4[:, 3], w[:, 0] * 0.75)


def test_load_pretrained_returns_skipped_keys(tmp_path, resnet20_state):
    path = tmp_path / "w.pth"
    torch.save(resnet20_state, path)
    assert load_pretrained(resnets.create_model("resnet20", num_classes=4), path) == ["fc.weight", "fc.bias"]
    assert load_pretrained(resnets.create_model("resnet20"), path) == []
