"""Training end to end on small real-format data: outputs, resume, divergence, bad input."""
import importlib
import json

import pytest
import torch

import resnets
from resnets import CheckpointError, ConfigError, DataError
from resnets.engine.checkpoint import load_training_checkpoint
from resnets.engine.train import TrainingDiverged, end_epoch, report, setup, train, train_epoch, train_step
from tests.conftest import make_cifar_batches


def _cfg(tmp_path, **kw):
    base = dict(model="resnet20", data="digits", subset=256, epochs=2, batch_size=64, lr=0.05,
                out=str(tmp_path / "run"), progress=False, tensorboard=False)
    return resnets.make_config(None, **{**base, **kw})


def test_the_loop_in_its_parts_setup_step_epoch_end_and_report(tmp_path):
    from tqdm import tqdm

    run = setup(_cfg(tmp_path, subset=64, epochs=1, batch_size=32, precision="fp32"))
    assert (run.steps_per_epoch, run.total_steps, run.step, run.epoch) == (2, 2, 0, 0)
    assert run.data.num_classes == 10 and next(run.model.parameters()).dtype == torch.float32

    x, y = next(iter(run.loader.batches(0, 0)))
    before = [p.detach().clone() for p in run.model.parameters()]
    loss, logits, target, labels = train_step(run, x, y, 0, per_process=False)
    assert torch.isfinite(loss) and logits.shape == (32, 10) and torch.equal(labels, y)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))  # one SGD step was taken

    run.step = 0  # the epoch starts from its first batch again
    bar = tqdm(disable=True)
    totals = train_epoch(run, bar)
    assert run.step == 2 and totals.seen == 64 and 0 <= totals.correct <= 64 and totals.seconds > 0
    row = end_epoch(run, totals, bar, runlog=None)
    assert row["epoch"] == 1 == run.best_epoch and row["train_loss"] == totals.loss_sum / 64
    assert (run.out / "best.pt").is_file() and load_training_checkpoint(run.out / "last.pt")["step"] == 2
    result = report(run)
    assert result.test.n == 360 and result.best_epoch == 1 and (run.out / "report.json").is_file()


def test_training_writes_checkpoints_metrics_curves_and_report(tmp_path):
    result = train(_cfg(tmp_path, tensorboard=True, ema_decay=0.9))
    out = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "metrics.jsonl", "curves.png", "confusion_test.png",
                 "report.json"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["step"] == 8
    report = json.loads((out / "report.json").read_text())
    assert report["val"]["split"] == "val" and report["test"]["split"] == "test" and report["test"]["n"] == 360
    assert result.test.top1 > 10  # learned something in 8 steps
    ckpt = load_training_checkpoint(out / "last.pt")
    assert ckpt["classes"] == [str(i) for i in range(10)] and ckpt["config"]["model"] == "resnet20"
    assert ckpt["ema"] is not None and ckpt["in_chans"] == 1


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    kw = dict(epochs=3, drop_path_rate=None, model_args={"drop_path_rate": 0.1}, mixup=0.2, ema_decay=0.9,
              lookahead_every=3, alternate_flips=True)
    full = train(_cfg(tmp_path / "a", **kw))

    class Crash(Exception):
        pass

    def crash_after_first_epoch(row):
        if row["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        train(_cfg(tmp_path / "b", **kw), on_epoch_end=crash_after_first_epoch)
    resumed = train(None, resume=tmp_path / "b" / "run" / "last.pt")
    a = load_training_checkpoint(full.out_dir / "last.pt")
    b = load_training_checkpoint(resumed.out_dir / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    assert a["lookahead"].keys() == b["lookahead"].keys()
    for k in a["lookahead"]:
        assert torch.equal(a["lookahead"][k], b["lookahead"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    lines = (resumed.out_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    functional = importlib.import_module("torch.nn.functional")  # the loss the training step computes

    real = functional.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(functional, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*last\.pt"):
        train(_cfg(tmp_path, subset=256, epochs=3))
    ckpt = load_training_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_cifar_batches_train(tmp_path):
    make_cifar_batches(tmp_path / "c", n_train=100, n_test=20)
    result = train(_cfg(tmp_path, data="cifar10", data_root=str(tmp_path / "c"), val_size=20, subset=None,
                        epochs=1, batch_size=32))
    assert result.test.n == 20 and result.val.n == 20


def test_image_tree_train_with_rrc_and_jitter(tmp_path, image_tree):
    result = train(_cfg(tmp_path, data=str(image_tree), val_size=3, subset=None, epochs=1, batch_size=8,
                        rrc_scale=[0.5, 1.0], crop_size=28, jitter=0.2, cutmix=1.0))
    ckpt = load_training_checkpoint(result.out_dir / "best.pt")
    assert ckpt["classes"] == ["cat", "dog", "fox"] and ckpt["crop_size"] == 28


def test_pretrained_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "r32.pth"
    torch.save(resnets.create_model("resnet32", in_chans=1).state_dict(), path)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        train(_cfg(tmp_path, pretrained=str(path)))


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="data not found"):
        train(_cfg(tmp_path, data=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="unknown model 'resnet21'"):
        train(_cfg(tmp_path, model="resnet21"))
    with pytest.raises(CheckpointError, match="not found"):
        train(None, resume=tmp_path / "nothing.pt")


@pytest.mark.precision
def test_bf16_autocast_and_channels_last_train(tmp_path):
    result = train(_cfg(tmp_path, subset=128, epochs=1, precision="bf16", channels_last=True, clip_grad=1.0,
                        no_decay_norm_bias=True, nesterov=True, schedule="multistep", milestones=[0.5]))
    assert result.history[0]["lr"] == pytest.approx(0.005) and result.test is not None


def test_tta_views_are_weighted_shifts_and_flips():
    from resnets.engine.predict import tta_views

    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    views = tta_views(x, flip=True, translate=True)
    assert len(views) == 6 and sum(w for _, w in views) == pytest.approx(1.0)
    shifted = [v for v, w in views if w == 0.125]
    assert any(torch.equal(v[..., 1:, 1:], x[..., :-1, :-1]) for v in shifted)  # moved down-right by one
    assert any(torch.equal(v[..., :-1, :-1], x[..., 1:, 1:]) for v in shifted)  # moved up-left by one
    assert [w for _, w in tta_views(x, flip=True, translate=False)] == [0.5, 0.5]


def test_fast_recipe_runs_end_to_end_without_a_validation_split(tmp_path):
    cfg = resnets.make_config("cifar10-fast-sgd", data="digits", subset=256, epochs=2, batch_size=64,
                              out=str(tmp_path / "run"), progress=False, tensorboard=False)
    result = train(cfg)
    assert result.val is None and result.test.n == 360 and result.best_epoch == 2
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["val"] is None and "no validation split" in report["note"] and report["tta_translate"]
    ckpt = load_training_checkpoint(result.out_dir / "best.pt")
    model = resnets.create_model("fastresnet8", num_classes=10, in_chans=1)
    model.load_state_dict(ckpt["model"])
    w = model.whiten.weight  # set from the data, then left alone
    assert torch.equal(w[4:], -w[:4]) and w.abs().sum() > 0
    assert all(r["val_acc"] is None for r in result.history) and result.test.top1 > 10


def test_compiling_the_step_is_chosen_where_it_pays(tmp_path, monkeypatch):
    train_module = importlib.import_module("resnets.engine.train")  # the package's ``train`` is the function

    cpu = torch.device("cpu")
    for isa, steps, pays in (("avx512_core_amx", 64_000, True), ("avx512_core_amx", 100, False),
                             ("avx512_core_bf16", 64_000, False), ("avx2", 64_000, False)):
        monkeypatch.setattr(train_module, "cpu_isa", lambda isa=isa: isa)
        assert train_module.compile_pays(cpu, steps) is pays, (isa, steps)
    assert not train_module.compile_pays(torch.device("cuda"), 64_000)  # unmeasured there: on request only
    monkeypatch.setattr(train_module, "cpu_isa", lambda: "avx512_core_amx")
    run = setup(_cfg(tmp_path, subset=64, epochs=1, batch_size=32))  # 2 steps: compiling would not pay
    assert run.compiled is False and run.forward is run.model and run.cfg.compile is None
    asked = setup(_cfg(tmp_path, subset=64, epochs=1, batch_size=32, compile=True, out=str(tmp_path / "b")))
    assert asked.compiled is True and asked.forward is not asked.model


def test_compiled_bfloat16_is_refused_where_bfloat16_is_not_native(tmp_path, monkeypatch):
    train_module = importlib.import_module("resnets.engine.train")
    monkeypatch.setattr(train_module, "native_bf16", lambda device="cpu": False)  # an AVX2 CPU
    with pytest.raises(ConfigError, match="needs a CPU that computes bfloat16 natively"):
        setup(_cfg(tmp_path, subset=64, epochs=1, batch_size=32, compile=True, precision="bf16"))
    assert not (tmp_path / "run").exists()  # refused before anything is written
    run = setup(_cfg(tmp_path, subset=64, epochs=1, batch_size=32, compile=True, out=str(tmp_path / "auto")))
    assert run.cfg.precision == "fp32" and run.compiled  # "auto" is float32 there, and compiles on request


@pytest.mark.slow
def test_a_compiled_step_is_the_eager_step_to_float_noise(tmp_path):
    """One float32 step through torch.compile moves the weights as the eager step does, to the rounding noise of
    float32: as far from it as the same eager step in another memory layout (NCHW), and no farther. (A long run
    then diverges from eager as chaotically as from any other rounding, bfloat16's included.)"""
    settings = {"eager": dict(compile=False), "compiled": dict(compile=True),
                "nchw": dict(compile=False, channels_last=False)}
    runs = {k: setup(_cfg(tmp_path, subset=64, epochs=1, batch_size=32, precision="fp32", out=str(tmp_path / k),
                          **kw)) for k, kw in settings.items()}
    start = torch.cat([p.detach().flatten() for p in runs["eager"].model.parameters()])
    x, y = next(iter(runs["eager"].loader.batches(0, 0)))
    losses = {k: train_step(r, x, y, 0, per_process=False)[0].item() for k, r in runs.items()}
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-5)
    after = {k: torch.cat([p.detach().flatten() for p in r.model.parameters()]) for k, r in runs.items()}
    update = (after["eager"] - start).norm()
    noise = (after["nchw"] - after["eager"]).norm() / update  # about 0.5% here: batch norm over 32 images
    assert (after["compiled"] - after["eager"]).norm() / update <= 2 * noise + 1e-6
