"""Every command that takes a network, against every kind of checkpoint the project makes or accepts: each pair
either works or refuses in one line that names what is missing and how to supply it (exit status 2)."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.models import pretrained
from resnets.models.loading import read_checkpoint

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "cifar10-test-200"  # 10 classes, 20 images each
QUICK = ["--epochs", "0.2", "--batch-size", "32", "--val-size", "40", "--no-progress", "--no-tensorboard"]
PLAIN = ("plain",)  # sources that name no architecture: a command with --model gets it
NO_RECIPE = ("shipped", "tag", "exported", "plain")  # weights saved without the settings they were trained with


@pytest.fixture(scope="module")
def sources(tmp_path_factory, http_root_module):
    """Each kind of source, by name: the path or name a user would type."""
    root = tmp_path_factory.mktemp("matrix")
    mp = pytest.MonkeyPatch()
    mp.setenv("RESNETS_HOME", str(root / "home"))
    mp.setenv("RESNETS_CACHE", str(root / "cache"))
    cfg = dict(model="resnet20", data=str(FOLDER), val_size=40, batch_size=32, progress=False, tensorboard=False)
    resnets.train(resnets.make_config(None, **cfg, epochs=1, out=str(root / "run")))
    resnets.train(resnets.make_config(None, **cfg, epochs=0.5, checkpoint_every=2, out=str(root / "mid")))
    best = root / "run" / "best.pt"
    assert main(["prune", str(best), "--amount", "0.5", "--out", str(root / "pruned.pt")]) in (0, None)
    assert main(["distill", "--teacher", str(best), "--student", "resnet20", "--data", str(FOLDER), *QUICK,
                 "--out", str(root / "distilled")]) in (0, None)
    assert main(["export", str(best), "--format", "safetensors", "--out", str(root / "exported.safetensors")]) \
        in (0, None)
    plain = root / "resnet20-plain.pth"  # as torchvision or timm save theirs: the state dict alone
    torch.save(read_checkpoint(best)["model"], plain)
    served = root / "served"
    served.mkdir()
    torch.save(read_checkpoint("resnet20_cifar10"), served / "resnet20-cifar10.pth")
    digest = hashlib.sha256((served / "resnet20-cifar10.pth").read_bytes()).hexdigest()
    url = http_root_module(served)
    tag = replace(pretrained.PRETRAINED["resnet18.tv_in1k"], model="resnet20", tag="test_cifar10", sha256=digest,
                  urls=(f"{url}/resnet20-cifar10.pth",), classes=tuple(resnets.Predictor("resnet20_cifar10",
                  mode="eager").classes), preprocessing=pretrained.Preprocessing(resize=32, crop=32,
                  mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261)))
    mp.setitem(pretrained.PRETRAINED, "resnet20.test_cifar10", tag)
    yield {"shipped": "resnet20_cifar10", "tag": "resnet20.test_cifar10", "best": str(best),
           "last": str(root / "run" / "last.pt"), "last-mid-epoch": str(root / "mid" / "last.pt"),
           "pruned": str(root / "pruned.pt"), "distilled": str(root / "distilled" / "best.pt"),
           "exported": str(root / "exported.safetensors"), "plain": str(plain)}
    mp.undo()


def _model(kind: str) -> list[str]:
    return ["--model", "resnet20"] if kind in PLAIN else []


def _net(kind: str, src: str) -> list[str]:
    """A network for the commands that take ``CHECKPOINT | --weights FILE --model NAME``."""
    return ["--weights", src, "--model", "resnet20"] if kind in PLAIN else [src]


def _serve_once(monkeypatch):
    """``resnets serve`` without a socket: uvicorn.run becomes one request to /health and one to /predict."""
    import io

    import uvicorn
    from fastapi.testclient import TestClient
    from PIL import Image

    answers = {}

    def run(app, **kwargs):
        png = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(png, format="PNG")
        with TestClient(app) as client:
            answers["health"] = client.get("/health").status_code
            answers["predict"] = client.post("/predict", files={"files": ("red.png", png.getvalue())}).json()

    monkeypatch.setattr(uvicorn, "run", run)
    return answers


IMAGE = str(FOLDER / "cat" / sorted(p.name for p in (FOLDER / "cat").iterdir())[0])

COMMANDS = {  # command -> (argv for a source, marks)
    "eval": lambda k, s, o: ["eval", *_net(k, s), "--data", str(FOLDER), "--mode", "eager"],
    "predict": lambda k, s, o: ["predict", *_net(k, s), IMAGE, "--mode", "eager"],
    "export": lambda k, s, o: ["export", s, "--format", "onnx", "--out", str(o / "x.onnx")],
    "quantize": lambda k, s, o: ["quantize", s, "--data", str(FOLDER), "--calibration", "32", "--split", "test",
                                 "--out",
                                 str(o / "q.onnx")],
    "prune": lambda k, s, o: ["prune", s, "--amount", "0.5", "--data", str(FOLDER), "--out", str(o / "p.pt")],
    "prune-finetune": lambda k, s, o: ["prune", s, "--amount", "0.5", "--finetune-epochs", "0.2", "--data",
                                       str(FOLDER), "--out", str(o / "p.pt")],
    "prune-distill": lambda k, s, o: ["prune", s, "--amount", "0.5", "--finetune-epochs", "0.2", "--distill",
                                      "--data", str(FOLDER), "--out", str(o / "p.pt")],
    "distill": lambda k, s, o: ["distill", "--teacher", s, "--student", "resnet20", "--data", str(FOLDER), *QUICK,
                                "--out", str(o / "d")],
    "finetune": lambda k, s, o: ["finetune", "--from", s, *_model(k), "--data", str(FOLDER), *QUICK,
                                 "--out", str(o / "f")],
    "train-pretrained": lambda k, s, o: ["train", "--pretrained", s, "--model", "resnet20", "--data", str(FOLDER),
                                         *QUICK, "--out", str(o / "t")],
    "features": lambda k, s, o: ["features", s, *_model(k), "--data", str(FOLDER), "--val-size", "40",
                                 "--out", str(o / "f.npz")],
    "ensemble": lambda k, s, o: ["ensemble", s, s, "--data", str(FOLDER)],
    "serve": lambda k, s, o: ["serve", *_net(k, s), "--mode", "eager", "--port", "0"],  # (any free port)
    "bench-deploy": lambda k, s, o: ["bench", "deploy", "--quick", "--no-compile", "--checkpoint", f"mine={s}",
                                     "--data", str(FOLDER), "--json", "--out", str(o / "deploy.json")],
    "info": lambda k, s, o: ["info", s],
}
SLOW = {"prune-finetune", "prune-distill", "distill", "finetune", "train-pretrained", "quantize", "bench-deploy"}
KINDS = ("shipped", "tag", "best", "last", "last-mid-epoch", "pruned", "distilled", "exported", "plain")

# the pairs that cannot work, and the words their one line must hold
REFUSED = {
    **{(c, k): "carries no training recipe" for c in ("prune-finetune", "prune-distill")
       for k in NO_RECIPE if k not in PLAIN},
    **{(c, "plain"): "plain state dict" for c in ("export", "quantize", "prune", "prune-finetune", "prune-distill",
                                                  "distill", "ensemble", "bench-deploy")},
    ("train-pretrained", "pruned"): "start from it with resnets finetune --from",
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in COMMANDS])
def test_every_command_takes_every_checkpoint_or_says_what_is_missing(command, kind, sources, tmp_path, capsys,
                                                                      monkeypatch):
    served = _serve_once(monkeypatch) if command == "serve" else None
    code = main(COMMANDS[command](kind, sources[kind], tmp_path))
    out, err = capsys.readouterr()
    refused = REFUSED.get((command, kind))
    if refused is None:
        assert code in (0, None), err
        assert served is None or (served["health"] == 200 and len(served["predict"]["predictions"][0]) >= 1)
    else:
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and refused in lines[0] and "Traceback" not in err, err
        assert not any(tmp_path.iterdir()), "a refused command wrote nothing"
