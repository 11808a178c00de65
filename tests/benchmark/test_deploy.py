"""The deploy table: every number format this processor runs, whole and thinner architectures, and a trained
checkpoint with its accuracy in each format."""
import json

import pytest

import resnets
from resnets.benchmark.deploy import precisions, thinner
from resnets.cli import main
from resnets.models import create_model
from resnets.models.profile import profile_model


def test_thinner_architectures_keep_a_share_of_the_inner_channels():
    model = thinner(create_model("resnet20"), 0.5)
    assert model.layer1[0].conv1.out_channels == 8 and model.layer3[2].conv2.in_channels == 32
    assert model.layer1[0].conv2.out_channels == 16  # the residual stream is kept
    whole, half = (sum(r.macs for r in profile_model(m, 32)) for m in (create_model("resnet20"), model))
    assert 0.45 < half / whole < 0.56


def test_the_quick_table_with_a_checkpoint(tmp_path, capsys):
    cfg = resnets.make_config("digits", model="resnet20", epochs=1, out=str(tmp_path / "run"), progress=False,
                              tensorboard=False)
    resnets.train(cfg)
    args = ["bench", "deploy", "--quick", "--checkpoint", f"digits={tmp_path / 'run' / 'best.pt'}", "--json",
            "--out", str(tmp_path / "deploy.json"), "--plot", str(tmp_path / "deploy.png"), "--no-compile"]
    assert main(args) in (0, None)
    table = json.loads(capsys.readouterr().out)
    kinds = [p for p, _ in precisions(compile=False)]
    assert [r["network"] for r in table["rows"]] == [n for n in ("resnet20", "resnet20 pruned 30%",
                                                                 "resnet20 pruned 50%", "digits") for _ in kinds]
    by = {(r["network"], r["precision"]): r for r in table["rows"]}
    assert by[("resnet20 pruned 50%", "float32")]["macs"] < 0.56 * by[("resnet20", "float32")]["macs"]
    if "bfloat16" in kinds:
        r = by[("resnet20", "bfloat16")]
        assert r["file_mb"] == pytest.approx(2 * r["params"] / 1e6, abs=1e-3)  # two bytes a weight
    for kind in kinds:
        r = by[("digits", kind)]
        assert r["split"] == "test" and 0 <= r["top1"] <= 100 and set(r["images_per_s"]) == {"1", "16"}
        assert r["latency_ms"] > 0
    top1 = [by[("digits", k)]["top1"] for k in kinds]
    assert max(top1) - min(top1) < 3  # every format gives nearly the float32 accuracy
    assert json.loads((tmp_path / "deploy.json").read_text()) == table
    assert (tmp_path / "deploy.png").stat().st_size > 10_000


def test_compiled_modes_join_where_they_run(monkeypatch, engines):
    import resnets.benchmark.deploy as deploy
    import resnets.inference.modes as modes

    monkeypatch.setattr(modes, "native_bf16", lambda device="cpu": True)
    engines(onnxruntime=True, compile_int8=True, openvino=False)
    assert [m for _, m in deploy.precisions()] == ["onnxruntime", "bf16", "compile_bf16", "int8", "compile_int8"]
    assert [m for _, m in deploy.precisions(compile=False)] == ["onnxruntime", "bf16", "int8"]
    engines(openvino=True)
    assert [m for _, m in deploy.precisions(compile=False)] == ["openvino", "bf16", "openvino_bf16", "int8",
                                                                "openvino_int8"]
    monkeypatch.setattr(modes, "native_bf16", lambda device="cpu": False)
    engines(compile_int8=False, openvino=False)
    assert [p for p, _ in deploy.precisions()] == ["float32", "int8"]
