import contextlib
import functools
import http.server
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
import torch

import resnets

SHARED = Path(os.environ.get("RESNETS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_script(name: str) -> ModuleType:
    """``bench/<name>.py`` (a script, not a package) as a module, its neighbour ``common.py`` importable as
    when it runs."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", help="also run the tests marked slow (CI runs everything)")


def pytest_collection_modifyitems(config, items):
    """The default run leaves out the tests marked slow (end-to-end training runs, subprocess jobs); ``--all``
    or an explicit ``-m`` expression takes them in."""
    if config.getoption("--all") or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow: run with --all")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def engines(monkeypatch):
    """``engines(openvino=False, onnxruntime=True)``: make each inference engine's modes (``compile_int8`` by
    its own name: it needs torchao) look installed or not, whatever this machine has."""
    import dataclasses

    from resnets.inference import REGISTRY

    def set_installed(**installed: bool) -> None:
        for name, record in list(REGISTRY.items()):
            yes = installed.get(name, installed.get(record.engine))
            if yes is not None:
                monkeypatch.setitem(REGISTRY, name, dataclasses.replace(record, installed=lambda yes=yes: yes))

    return set_installed


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def parity_reference():
    """``(reference json, fill module)``: torchvision's and timm's keys, shapes and logits (tests/fixtures)."""
    import importlib.util
    import json

    ref = FIXTURES / "parity"
    spec = importlib.util.spec_from_file_location("parity_fill", ref / "fill.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    return json.loads((ref / "resnet_reference.json").read_text()), fill


@pytest.fixture(scope="session")
def parity_json():
    """``parity_json(name)``: a reference file of tests/fixtures/parity (keys, shapes, float64 outputs)."""
    import json

    @functools.cache
    def read(name: str) -> dict:
        return json.loads((FIXTURES / "parity" / name).read_text())

    return read


@pytest.fixture(scope="session")
def filled_outputs(parity_reference):
    """``filled_outputs(model, size)``: ``model``'s float64 eval-mode output on the reference input, with the
    deterministic weights of ``parity/fill.py`` (the references' weights)."""
    _, fill = parity_reference

    def run(model: torch.nn.Module, size: int = 224):
        model = model.double().eval()
        model.load_state_dict(fill.fill_state_dict(model.state_dict()), strict=True)
        with torch.no_grad():
            return model(fill.reference_input(size=size))

    return run


def _shared_data(name: str, what: str) -> Path:
    path = SHARED / "data" / name
    if not path.is_file():
        pytest.skip(f"{what} is not at {path}")
    return path


@pytest.fixture(scope="session")
def cifar10_jpeg():
    """CIFAR-10 as a JPEG image-folder tree (a .tar.gz of it)."""
    return _shared_data("cifar10-jpeg.tar.gz", "the CIFAR-10 JPEG copy")


@pytest.fixture(scope="session")
def cifar10_lossless():
    """The original CIFAR-10 pixels, in the official python-batches layout (a .tar.xz of it)."""
    return _shared_data("cifar-10-lossless-python.tar.xz", "the original CIFAR-10 archive")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test gets a fresh dataset cache, outside the user's home."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path_factory.mktemp("cache")))


def make_cifar_batches(root: Path, n_train: int = 60, n_test: int = 20, classes: int = 10, kind: str = "cifar10"):
    """Pickled batches in the official CIFAR python layout (numpy uint8 rows of 3072 bytes)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        train_names, test_names, label_key = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"
        meta_name, names_key = "batches.meta", b"label_names"
    else:
        folder = root / "cifar-100-python"
        train_names, test_names, label_key = ["train"], ["test"], b"fine_labels"
        meta_name, names_key = "meta", b"fine_label_names"
    folder.mkdir(parents=True)

    def dump(name, n):
        labels = [i % classes for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), label_key: labels, b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(n)]}, f, protocol=2)

    for name in train_names:
        dump(name, n_train // len(train_names))
    for name in test_names:
        dump(name, n_test)
    with open(folder / meta_name, "wb") as f:
        pickle.dump({names_key: [f"class{i}".encode() for i in range(classes)]}, f, protocol=2)
    return folder


def make_image_tree(root: Path, classes=("cat", "dog", "fox"), per_class: int = 8, size: int = 32,
                    splits=("train", "test"), fmt: str = "png"):
    """An ImageFolder tree of small images whose class is visible in the colour (so a model can learn it)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                arr[..., ci % 3] += 150
                Image.fromarray(arr).save(d / f"{i:04d}.{fmt}")
    return root


def make_mask_folder(root: Path, n: int = 24, size: int = 48, splits=(None,), seed: int = 0, fmt: str = "png"):
    """Segmentation data in the real format: ``images/*.png`` (or .jpg) and palette-PNG ``masks/*.png`` (per
    split folder where ``splits`` names them). Each image is dark noise (class 0) with a reddish square (class 1)
    and a bluish disc (class 2) at random places; the square's border is 255 (ignored)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split in splits:
        base = root / split if split else root
        (base / "images").mkdir(parents=True)
        (base / "masks").mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 70, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            side = size // 3
            top, left = rng.integers(0, size - side, 2)
            mask[top:top + side, left:left + side] = 255
            mask[top + 1:top + side - 1, left + 1:left + side - 1] = 1
            img[top:top + side, left:left + side] = (200, 60, 40) + rng.integers(0, 40, (side, side, 3))
            cy, cx = rng.integers(size // 6, size - size // 6, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2
            mask[disc] = 2
            img[disc] = (40, 60, 200)
            Image.fromarray(img).save(base / "images" / f"{i:04d}.{fmt}")
            out = Image.frombytes("P", (size, size), mask.tobytes())
            out.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255] * (3 * 253))
            out.save(base / "masks" / f"{i:04d}.png")
    return root


@pytest.fixture
def image_tree(tmp_path):
    return make_image_tree(tmp_path / "tree")


@pytest.fixture(scope="session")
def tree_run(tmp_path_factory):
    """A model trained briefly on a small colour-coded image tree."""
    root = tmp_path_factory.mktemp("evalrun")
    tree = make_image_tree(root / "tree", per_class=12)
    cfg = resnets.make_config(None, model="resnet20", data=str(tree), val_size=6, epochs=6, batch_size=16, lr=0.05,
                              out=str(root / "run"), progress=False, tensorboard=False, hflip=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(root / "cache"))
        result = resnets.train(cfg)
        yield tree, result.out_dir / "best.pt", result


@pytest.fixture(scope="session")
def digits_resnet20(tmp_path_factory):
    """The ``best.pt`` of a ResNet-20 trained for two epochs on the embedded digits (a teacher, a parent)."""
    root = tmp_path_factory.mktemp("digits-resnet20")
    cfg = resnets.make_config("digits", model="resnet20", epochs=2, out=str(root / "run"), progress=False,
                              tensorboard=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(root / "cache"))
        resnets.train(cfg)
    return root / "run" / "best.pt"


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _http_servers():
    """``serve(folder)`` serves a folder on 127.0.0.1 (its URL is returned) until the block ends."""
    servers = []

    def serve(folder):
        handler = functools.partial(Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield serve
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.fixture
def http_root():
    """``serve(folder)`` serves a folder on 127.0.0.1 for the test (its URL is returned), then stops."""
    with _http_servers() as serve:
        yield serve


@pytest.fixture(scope="module")
def http_root_module():
    """``http_root`` for a whole test module."""
    with _http_servers() as serve:
        yield serve
