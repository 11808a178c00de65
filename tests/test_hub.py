"""Published weights: fetched from a local HTTP server, verified by sha256, cached, used offline; clear errors."""
import hashlib
import json
from dataclasses import replace

import pytest
import torch
from conftest import make_mask_folder

import resnets
from resnets.errors import CheckpointError, ConfigError
from resnets.hub import fetch
from resnets.models import pretrained
from resnets.models.loading import resolve_weights
from resnets.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    return tmp_path / "home" / "weights"


@pytest.fixture
def served(tmp_path, http_root):
    """A torchvision-layout resnet18 state dict served on 127.0.0.1, with its sha256."""
    folder = tmp_path / "www"
    folder.mkdir()
    state = resnets.create_model("resnet18").state_dict()
    torch.save(state, folder / "resnet18-test.pth")
    digest = hashlib.sha256((folder / "resnet18-test.pth").read_bytes()).hexdigest()
    return http_root(folder), digest, state, folder


def test_fetch_verifies_caches_and_then_works_offline(home, served, monkeypatch):
    url, digest, _, folder = served
    path = fetch([f"{url}/resnet18-test.pth"], digest, progress=False)
    assert path == home / "resnet18-test.pth" and path.is_file()
    (folder / "resnet18-test.pth").unlink()  # the server no longer has it: the cache serves
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    assert fetch([f"{url}/resnet18-test.pth"], digest[:8], progress=False) == path  # a publisher's prefix works


def test_a_checksum_mismatch_is_refused_and_nothing_is_cached(home, served):
    url, digest, _, _ = served
    with pytest.raises(CheckpointError, match="does not match its sha256.*refused"):
        fetch([f"{url}/resnet18-test.pth"], "0" * 64, progress=False)
    assert not list(home.glob("*"))  # no partial or wrong file left behind


def test_no_network_offline_and_a_damaged_cache_each_say_the_fix(home, served, monkeypatch):
    url, digest, _, _ = served
    with pytest.raises(CheckpointError, match=r"cannot download http://127.0.0.1:9/x.pth .*download .* yourself"):
        fetch(["http://127.0.0.1:9/x.pth"], digest, progress=False)
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the cache and RESNETS_OFFLINE=1"):
        fetch([f"{url}/resnet18-test.pth"], digest, progress=False)
    home.mkdir(parents=True, exist_ok=True)
    (home / "resnet18-test.pth").write_bytes(b"half a file")
    with pytest.raises(CheckpointError, match="cached .* does not match its sha256.*delete it"):
        fetch([f"{url}/resnet18-test.pth"], digest, progress=False)


def test_a_mirror_is_tried_when_the_first_url_fails(home, served):
    url, digest, _, _ = served
    assert fetch(["http://127.0.0.1:9/resnet18-test.pth", f"{url}/resnet18-test.pth"], digest, progress=False)


def test_tags_load_through_create_model_and_as_described_weights(home, served, monkeypatch):
    url, digest, state, _ = served
    tag = replace(pretrained.PRETRAINED["resnet18.tv_in1k"], tag="test_in1k", urls=(f"{url}/resnet18-test.pth",),
                  sha256=digest)
    monkeypatch.setitem(pretrained.PRETRAINED, "resnet18.test_in1k", tag)
    model = resnets.create_model("resnet18.test_in1k", pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    head = resnets.create_model("resnet18", weights="test_in1k", num_classes=10)  # a new head, the rest loaded
    assert head.fc.out_features == 10 and torch.equal(head.conv1.weight, state["conv1.weight"])
    described = resolve_weights("resnet18.test_in1k")
    predictor = resnets.Predictor(described, mode="fused")
    assert len(predictor.classes) == 1000 and predictor.classes[130] == "flamingo" and predictor.image_size == 256


def test_unknown_tags_and_models_without_weights_are_named_errors():
    with pytest.raises(ConfigError, match="unknown weights resnet50.tv3_in1k; did you mean tv_in1k"):
        resnets.create_model("resnet50", weights="tv3_in1k")
    with pytest.raises(ConfigError, match="no published ImageNet weights for resnet20"):
        resnets.create_model("resnet20", pretrained=True)


def test_list_weights_shows_tags_with_accuracy_and_source(capsys):
    assert main(["list", "--weights", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "resnet50.tv2_in1k" in out and "80.9" in out and "resnet50.keras_in1k" in out and "npmjs" in out


@pytest.fixture
def test_tag(served, monkeypatch):
    """``resnet18.test_in1k``: published-weights metadata (ImageNet classes, preprocessing) for the served file."""
    url, digest, state, _ = served
    tag = replace(pretrained.PRETRAINED["resnet18.tv_in1k"], tag="test_in1k", urls=(f"{url}/resnet18-test.pth",),
                  sha256=digest)
    monkeypatch.setitem(pretrained.PRETRAINED, "resnet18.test_in1k", tag)
    return "resnet18.test_in1k", state


def test_a_tag_name_works_wherever_a_checkpoint_does(home, test_tag, image_tree, tmp_path):
    """Predictor, features (a linear probe) and fine-tuning all take the published weights' name."""
    from resnets.transfer import features

    name, state = test_tag
    predictor = resnets.Predictor(name, mode="fused")
    assert predictor.classes[1] == "goldfish" and predictor.image_size == 256
    found = features(name, str(image_tree), probe=True, val_size=0, input_size=64)
    assert found["model"] == "resnet18" and found["dim"] == 512 and 0 <= found["linear_probe_top1"]["test"] <= 100
    cfg = resnets.make_config("finetune", model="resnet18", pretrained=name, data=str(image_tree), epochs=1,
                              batch_size=8, out=str(tmp_path / "ft"), progress=False, tensorboard=False)
    result = resnets.train(cfg)
    model, _ = resnets.engine.checkpoint.model_from_checkpoint(result.out_dir / "best.pt")
    assert model.fc.out_features == 3  # a new head for the tree's 3 classes, the backbone from the weights


def test_the_server_page_answers_with_imagenet_class_names(home, test_tag, tmp_path):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from resnets.deploy.server import create_app

    name, _ = test_tag
    photo = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 120, 40)).save(photo, format="JPEG")
    with TestClient(create_app(resnets.Predictor(name, mode="fused"), name=name)) as client:
        assert "<html" in client.get("/").text.lower()
        info = client.get("/info").json()
        assert info["model"] == name and len(info["classes"]) == 1000 and info["classes"][0] == "tench"
        top = client.post("/predict", files={"files": ("photo.jpg", photo.getvalue(), "image/jpeg")}).json()
        assert all(t["class"] in info["classes"] for t in top["predictions"][0]["top"])


def test_the_publishers_interpolation_is_applied(home, served, monkeypatch):
    """timm's a1_in1k weights are evaluated with bicubic resizing: the Predictor resizes as the tag records."""
    import io

    import numpy as np
    from PIL import Image

    url, digest, _, _ = served
    base = pretrained.PRETRAINED["resnet18.tv_in1k"]
    tag = replace(base, tag="bicubic_in1k", urls=(f"{url}/resnet18-test.pth",), sha256=digest,
                  preprocessing=replace(base.preprocessing, interpolation="bicubic"))
    monkeypatch.setitem(pretrained.PRETRAINED, "resnet18.bicubic_in1k", tag)
    predictor = resnets.Predictor("resnet18.bicubic_in1k", mode="fused")
    assert predictor.interpolation == "bicubic"
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo, "PNG")
    expected = Image.open(io.BytesIO(photo.getvalue())).resize((341, 256), Image.BICUBIC).crop((42, 0, 298, 256))
    assert np.array_equal(predictor.load(photo.getvalue()).permute(1, 2, 0).numpy(), np.asarray(expected))


def test_every_tag_names_a_registered_model_and_a_checksum():
    from resnets.models import list_models

    for name, w in pretrained.PRETRAINED.items():
        assert w.model in list_models() and name == f"{w.model}.{w.tag}"
        assert len(w.sha256) >= 8 and all(c in "0123456789abcdef" for c in w.sha256)
        assert w.source != "timm" or w.urls[0].rsplit("/", 1)[1].split("-")[-1].startswith(w.sha256)
    rs = [f"resnetrs{d}.tf_in1k" for d in (50, 101, 152, 200, 270, 350, 420)]
    assert set(rs) <= set(pretrained.PRETRAINED) and {"resnet50.a2_in1k",
                                                      "resnet50.a3_in1k"} <= set(pretrained.PRETRAINED)
    p = pretrained.PRETRAINED["resnetrs50.tf_in1k"].preprocessing
    assert (p.resize, p.crop, p.interpolation) == (246, 224, "bicubic")  # timm: floor(224 / 0.91), bicubic


def test_a_timm_resnet_rs_file_loads_by_its_tag(home, tmp_path, http_root, monkeypatch):
    """timm's ResNet-RS files hold our key names: one served from 127.0.0.1 loads with strict keys."""
    folder = tmp_path / "www"
    folder.mkdir()
    state = resnets.create_model("resnetrs50").state_dict()
    torch.save(state, folder / "resnetrs50_test.pth")
    digest = hashlib.sha256((folder / "resnetrs50_test.pth").read_bytes()).hexdigest()
    tag = replace(pretrained.PRETRAINED["resnetrs50.tf_in1k"], urls=(f"{http_root(folder)}/resnetrs50_test.pth",),
                  sha256=digest[:8])
    monkeypatch.setitem(pretrained.PRETRAINED, "resnetrs50.tf_in1k", tag)
    model = resnets.create_model("resnetrs50", pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    predictor = resnets.Predictor(resolve_weights("resnetrs50.tf_in1k"), mode="fused")
    assert predictor.image_size == 246 and len(predictor.classes) == 1000


def test_torchvisions_segmentation_weights_load_by_tag(home, tmp_path, http_root, monkeypatch):
    """The COCO-with-VOC-labels tags: 21 classes, the auxiliary head, torchvision's keys, mIoU as the metric."""
    folder = tmp_path / "www"
    folder.mkdir()
    state = resnets.create_model("fcn_resnet50", aux_loss=True).state_dict()
    torch.save(state, folder / "fcn_test.pth")
    digest = hashlib.sha256((folder / "fcn_test.pth").read_bytes()).hexdigest()
    tag = replace(pretrained.PRETRAINED["fcn_resnet50.tv_coco_voc"], urls=(f"{http_root(folder)}/fcn_test.pth",),
                  sha256=digest)
    monkeypatch.setitem(pretrained.PRETRAINED, "fcn_resnet50.tv_coco_voc", tag)
    model = resnets.create_model("fcn_resnet50", pretrained=True)
    assert model.aux_classifier is not None and model.num_classes == 21
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    w = pretrained.PRETRAINED["deeplabv3_resnet50.tv_coco_voc"]
    assert len(w.classes) == 21 and w.classes[15] == "person" and w.sha256 == "cd0a2569"
    assert pretrained.describe(w).split()[1:3] == ["mIoU", "66.4"]


def test_a_segmentation_tag_given_to_a_classifier_command_is_one_line(home, tmp_path, http_root, monkeypatch, capsys):
    folder = tmp_path / "www"
    folder.mkdir()
    torch.save(resnets.create_model("fcn_resnet50", aux_loss=True).state_dict(), folder / "fcn.pth")
    digest = hashlib.sha256((folder / "fcn.pth").read_bytes()).hexdigest()
    tag = replace(pretrained.PRETRAINED["fcn_resnet50.tv_coco_voc"], urls=(f"{http_root(folder)}/fcn.pth",),
                  sha256=digest)
    monkeypatch.setitem(pretrained.PRETRAINED, "fcn_resnet50.tv_coco_voc", tag)
    assert main(["eval", "fcn_resnet50.tv_coco_voc", "--task", "classify", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds the segmentation network fcn_resnet50" in err and err.count("\n") == 0
    make_mask_folder(tmp_path / "masks", n=10, size=24)  # eval takes it as a segmentation network, VOC's classes
    assert main(["eval", "fcn_resnet50.tv_coco_voc", "--data", str(tmp_path / "masks"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["iou"]) == 21 and list(shown["iou"])[:2] == ["background", "aeroplane"]
