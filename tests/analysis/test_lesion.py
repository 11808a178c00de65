"""Deleting blocks at test time: the shortcut stays, the forward is restored, plain layers only where possible."""
import math

import pytest
import torch

import resnets
from resnets.analysis.lesion import analyze_lesion, blocks_of, deletable, lesion_study, lesioned, path_lengths


def test_deleting_a_block_leaves_its_shortcut_and_restores_afterwards():
    model = resnets.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        block = blocks_of(model)[1]
        inner = model.forward_stem(x)
        inner = blocks_of(model)[0](inner)
        with lesioned(model, [1]):
            assert torch.equal(block(inner), torch.relu(inner))  # identity shortcut, then the block's ReLU
            changed = model(x)
        assert torch.equal(model(x), before) and not torch.equal(changed, before)


def test_preact_and_projection_blocks_keep_their_shortcut():
    model = resnets.create_model("preact_resnet110", layers=(1, 1, 1)).eval()
    x = torch.randn(1, 16, 32, 32)
    down = blocks_of(model)[1]  # 16 -> 32 channels, stride 2, 1x1 projection on the pre-activated input
    with torch.no_grad(), lesioned(model, [1]):
        torch.testing.assert_close(down(x), down.downsample(torch.relu(down.bn1(x))))


def test_plain_networks_can_only_skip_shape_keeping_layers():
    plain = resnets.create_model("plain20")
    flags = [deletable(b) for b in blocks_of(plain)]
    assert flags == [True] * 3 + [False, True, True, False, True, True]
    with pytest.raises(ValueError, match="cannot be deleted"):
        with lesioned(plain, [3]):
            pass
    assert all(deletable(b) for b in blocks_of(resnets.create_model("resnet20")))


def test_path_lengths_are_binomial():
    counts = path_lengths(9)
    assert sum(counts) == 2**9 and counts == [math.comb(9, k) for k in range(10)]


def test_lesion_study_structure():
    model = resnets.create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)

    def agreement(m):  # percent of outputs left unchanged, as a stand-in for accuracy
        with torch.no_grad():
            return 100.0 * float((m(x).argmax(1) == ref.argmax(1)).float().mean())

    r = lesion_study(model, agreement, samples=2)
    assert r["intact"] == 100.0 and r["blocks"] == r["deletable"] == 9
    assert [s["downsampling"] for s in r["single"]] == [False] * 3 + [True, False, False, True, False, False]
    assert [m["deleted"] for m in r["random"]] == list(range(1, 10))
    assert r["path_lengths"] == path_lengths(9)


def test_analyze_lesion_writes_its_outputs(tree_run, tmp_path):
    _, ckpt, _ = tree_run
    results = analyze_lesion({"resnet20": ckpt}, tmp_path, split="val", samples=2)
    assert 0 <= results["resnet20"]["intact"] <= 100
    for name in ("lesion_single.png", "lesion_random.png", "path_lengths.png", "lesion.csv", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| resnet20 | 9 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("name", ["fastresnet8", "odenet20"])
def test_networks_without_deletable_blocks_are_refused_in_one_line(name):
    with pytest.raises(resnets.ConfigError, match=f"a lesion study deletes the blocks of a ResNet .*; a "
                                                  f"{type(resnets.create_model(name)).__name__} has none"):
        lesion_study(resnets.create_model(name), lambda model: 0.0, samples=1)


def test_the_command_labels_two_checkpoints_of_one_folder_apart(tree_run, tmp_path, capsys):
    """Two weights files side by side (e.g. a ResNet and its plain twin) are two rows, not one overwriting."""
    import shutil

    from resnets.cli import main

    _, ckpt, _ = tree_run
    for name in ("first.pt", "second.pt"):
        shutil.copy(ckpt, tmp_path / name)
    main(["analyze", "lesion", str(tmp_path / "first.pt"), "--compare", str(tmp_path / "second.pt"),
          "--samples", "1", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "first: intact" in printed and "second: intact" in printed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| first | 9 |" in report and "| second | 9 |" in report
