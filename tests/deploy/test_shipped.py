"""The CIFAR-10 ResNets that ship inside the package work by name, with no download."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets.cli import main
from resnets.models.source import read_description
from resnets.models.loading import shipped_weights

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# name: (network, recipe, the campaign run, its training images, a floor under the test top-1 it reports)
SHIPPED = {"resnet20_cifar10": ("resnet20", "cifar10-resnet-cosine", "resnet20-cosine-s0", 50000, 91.5),
           "resnet56_cifar10": ("resnet56", "cifar10-resnet-cosine", "resnet56-cosine-s0", 50000, 93.0)}


def test_every_shipped_network_is_known():
    assert set(shipped_weights()) == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_described(name):
    model, recipe, run, images, least = SHIPPED[name]
    meta = read_description(shipped_weights()[name])
    assert meta["classes"] == CIFAR10 and meta["config"]["model"] == model
    assert meta["test_top1"] > least and meta["command"] == f"python bench/ship_weights.py {run} --as {name}"
    assert meta["iterations"] == 64000 and meta["recipe"] == recipe and meta["seed"] == 0
    assert meta["campaign_result"] == f"bench/results/campaign/{run}.json"
    assert meta["trained_on"].startswith("CIFAR-10, original pixels") and f"({images} images)" in meta["trained_on"]


def test_shipped_weights_are_stored_in_half_and_read_in_float32():
    from safetensors import safe_open

    with safe_open(str(shipped_weights()["resnet20_cifar10"]), "pt") as f:
        assert f.get_tensor("conv1.weight").dtype == torch.float16
    state = resnets.models.loading.read_checkpoint("resnet20_cifar10")
    assert state["conv1.weight"].dtype == torch.float32 and state["bn1.num_batches_tracked"].dtype == torch.int64


def test_predict_by_name(tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.fromarray(np.full((32, 32, 3), (180, 30, 30), dtype=np.uint8)).save(image)
    assert main(["predict", "--model", "resnet20_cifar10", str(image), "--topk", "3"]) in (0, None)
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(image)) and sum(c in line for c in CIFAR10) == 3


def test_create_model_takes_the_shipped_name():
    model = resnets.create_model("resnet20", pretrained="resnet20_cifar10").eval()
    predictor = resnets.Predictor("resnet20_cifar10", mode="eager")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), predictor.model(x))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accuracy_on_original_cifar10_test_images(name):
    """200 images of the CIFAR-10 test set (20 a class, in tests/fixtures): top-1 within three standard errors
    of the 10,000-image figure the weights' description reports; the float32 fast path agrees with eager."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "cifar10-test-200"
    reported = read_description(shipped_weights()[name])["test_top1"]
    fused = resnets.evaluate(name, str(folder), split="test", mode="fused")
    eager = resnets.evaluate(name, str(folder), split="test", mode="eager")
    se = 100 * (reported / 100 * (1 - reported / 100) / 200) ** 0.5
    assert fused.n == 200 and abs(fused.top1 - reported) < 3 * se
    assert fused.top1 == eager.top1 and fused.confusion == eager.confusion


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accuracy_on_the_official_test_set(cifar10_lossless, name):
    metrics = resnets.evaluate(name, str(cifar10_lossless), split="test", mode="fused")
    assert metrics.n == 10000 and metrics.top1 == pytest.approx(read_description(
        shipped_weights()[name])["test_top1"], abs=0.01)


def test_shipped_weights_are_a_finetuning_source_by_name():
    from resnets.transfer import describe_source, finetune_config_args

    source = describe_source("resnet20_cifar10")
    assert source.model == "resnet20" and source.in_chans == 3 and len(source.mean) == 3
    args = finetune_config_args("resnet20_cifar10", None)
    assert args["model"] == "resnet20" and args["pretrained"].endswith("resnet20_cifar10.safetensors")


def test_list_weights_shows_the_shipped_networks_with_their_described_accuracy(capsys):
    assert main(["list", "--weights", "resnet56"]) in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    meta = read_description(shipped_weights()["resnet56_cifar10"])
    assert len(lines) == 1 and lines[0].startswith("resnet56_cifar10")
    assert f"test top-1 {meta['test_top1']:.2f}" in lines[0] and meta["recipe"] in lines[0]
    assert main(["list", "--weights", "resnet*"]) in (0, None)
    out = capsys.readouterr().out
    assert all(name in out for name in SHIPPED) and "resnet50.tv2_in1k" in out
