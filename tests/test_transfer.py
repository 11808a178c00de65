"""Transfer learning: freezing, new heads, foreign state dicts, features and the linear probe."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import resnets
from resnets import ConfigError
from resnets.errors import CheckpointError
from resnets.engine.optim import frozen_stages_at, make_optimizer, set_lr
from resnets.transfer import describe_source, features


def test_freezing_really_freezes_weights_and_norm_statistics():
    model = resnets.create_model("resnet20", num_classes=3)
    model.freeze(2)
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("conv1", "bn1", "layer1", "layer2"))}
    opt = make_optimizer(model, resnets.TrainConfig(lr=0.1, weight_decay=1e-3))
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    assert not torch.equal(model.layer3[0].bn1.running_mean, torch.zeros(64))  # unfrozen stages still learn
    assert not model.bn1.training and not model.layer2[0].bn1.training and model.layer3[0].bn1.training
    model.freeze(None)
    assert all(p.requires_grad for p in model.parameters()) and model.bn1.training


def test_gradual_unfreezing_schedule():
    cfg = resnets.TrainConfig(freeze_stages=2, unfreeze_every=3)
    assert [frozen_stages_at(cfg, e) for e in range(10)] == [2, 2, 2, 1, 1, 1, 0, 0, 0, None]
    assert frozen_stages_at(resnets.TrainConfig(freeze_stages=1), 50) == 1


def test_head_gets_its_own_learning_rate():
    model = resnets.create_model("resnet20")
    opt = make_optimizer(model, resnets.TrainConfig(lr=0.1, head_lr_mult=10))
    set_lr(opt, 0.02)
    head = {id(p) for p in model.fc.parameters()}
    for group in opt.param_groups:
        is_head = all(id(p) in head for p in group["params"])
        assert group["lr"] == pytest.approx(0.2 if is_head else 0.02)


def _torchvision_style_file(tmp_path):
    """A resnet18 state dict as torchvision saves it (ImageNet head, 3 channels)."""
    path = tmp_path / "resnet18-tv.pth"
    torch.save(resnets.create_model("resnet18").state_dict(), path)
    return path


def _timm_style_file(tmp_path):
    path = tmp_path / "resnet26d-timm.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in resnets.create_model("resnet26d").state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("maker,model", [(_torchvision_style_file, "resnet18"), (_timm_style_file, "resnet26d")])
def test_foreign_state_dicts_fine_tune_on_grayscale_digits(tmp_path, maker, model):
    path = maker(tmp_path)
    cfg = resnets.make_config("finetune", model=model, pretrained=str(path), data="digits", subset=64, epochs=1,
                              batch_size=32, out=str(tmp_path / "ft"), progress=False, tensorboard=False,
                              freeze_stages=3, hflip=False, eval_test=False)
    result = resnets.train(cfg)
    ckpt = torch.load(result.out_dir / "last.pt", weights_only=True)
    pretrained = torch.load(path, weights_only=True) if path.suffix == ".pth" else None
    if pretrained is not None:  # frozen stage 3 kept the pretrained weights exactly
        assert torch.equal(ckpt["model"]["layer3.0.conv1.weight"], pretrained["layer3.0.conv1.weight"])
        torch.testing.assert_close(ckpt["model"]["conv1.weight"], pretrained["conv1.weight"].sum(1, keepdim=True))
    assert ckpt["model"]["fc.weight"].shape == (10, 512 if model == "resnet18" else 2048)


def test_plain_state_dict_needs_a_model_name(tmp_path):
    with pytest.raises(CheckpointError, match="plain state dict: name its architecture with --model"):
        describe_source(_torchvision_style_file(tmp_path))


def test_features_and_linear_probe(tmp_path):
    path = _torchvision_style_file(tmp_path)
    out = tmp_path / "f.safetensors"
    result = features(path, "digits", out, model="resnet18", probe=True, subset=300)
    assert result["dim"] == 512 and result["images"] == {"train": 300, "val": 180, "test": 360}
    saved = load_file(str(out))
    assert saved["train.features"].shape == (300, 512) and saved["test.labels"].shape == (360,)
    assert 0 <= result["linear_probe_top1"]["test"] <= 100
    npz = tmp_path / "f.npz"
    features(path, "digits", npz, model="resnet18", stage=2, subset=50)  # the second stage (0: the stem)
    with np.load(npz) as z:
        assert z["train.features"].shape == (50, 128, 4, 4) and z["val.files"][0].startswith("digits[")


def test_features_reject_an_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match=r"\.npz or \.safetensors"):
        features(_torchvision_style_file(tmp_path), "digits", tmp_path / "f.csv", model="resnet18", subset=20)


def test_finetune_command_from_a_checkpoint(tmp_path, capsys):
    from resnets.cli import main

    src = tmp_path / "src"
    assert main(["train", "--subset", "128", "--epochs", "1", "--out", str(src), "--no-progress",
                 "--no-tensorboard"]) == 0
    out = tmp_path / "ft"
    assert main(["finetune", "--from", str(src / "best.pt"), "--data", "digits", "--subset", "64", "--epochs", "1",
                 "--freeze-stages", "1", "--unfreeze-every", "1", "--out", str(out), "--no-progress",
                 "--no-tensorboard", "--no-hflip"]) == 0
    cfg = json.loads((out / "report.json").read_text())["config"]
    assert cfg["pretrained"] == str(src / "best.pt") and cfg["head_lr_mult"] == 10 and cfg["freeze_stages"] == 1
    assert main(["features", str(src / "best.pt"), "--data", "digits", "--subset", "100", "--linear-probe"]) == 0
    assert "linear_probe_top1" in capsys.readouterr().out
