"""Residual alignment: the randomized SVD against a dense one, the measures on networks whose Jacobians are known
in closed form, and the command end to end."""
import dataclasses
import importlib
import json

import pytest
import torch

import resnets
from resnets.analysis import alignment
from resnets.analysis.jacobians import effective_rank, line_fit, top_singular
from resnets.cli import main


def test_randomized_svd_matches_the_dense_svd_of_a_small_jacobian():
    torch.manual_seed(0)
    w1, w2 = torch.randn(40, 30), torch.randn(25, 40)
    f = lambda z: w2 @ torch.tanh(w1 @ z)  # noqa: E731
    x = torch.randn(30)
    u, s, vh = torch.linalg.svd(torch.func.jacrev(f)(x))
    r = top_singular(f, x, 5, iters=8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.s, s[:5], rtol=1e-4, atol=1e-4)
    assert torch.allclose((r.u @ u[:, :5]).abs().diag(), torch.ones(5), atol=1e-3)  # the same vectors, up to sign
    assert torch.allclose((r.v @ vh[:5].T).abs().diag(), torch.ones(5), atol=1e-3)


def test_a_linear_residual_network_with_shared_singular_vectors_is_aligned_with_rank_r():
    torch.manual_seed(0)
    n, r, blocks = 24, 3, 5
    basis = torch.linalg.qr(torch.randn(n, r)).Q  # every branch: U diag(s_l) U^T, the same U
    scales = [torch.tensor([3.0, 2.0, 1.0]) / (j + 1) for j in range(blocks)]
    branch = lambda i, z: basis @ (scales[i] * (basis.T @ z))  # noqa: E731
    trajectories = []
    for _ in range(3):
        x = [torch.randn(n)]
        for i in range(blocks):
            x.append(x[-1] + branch(i, x[-1]))
        trajectories.append(x)
    m = alignment.measure(trajectories, branch, k=6)
    assert m["ra2_within_block"] == pytest.approx(1.0, abs=1e-4)  # symmetric: left = right singular vector
    assert all(v == pytest.approx(1.0, abs=1e-3) for row in m["ra2_matrix"] for v in row)  # aligned across depth
    assert m["ra3_rank_1pct"] == r and m["ra3_spectrum"][r] < 1e-4  # rank exactly r
    assert m["ra4_top_singular"] == pytest.approx(sum(3.0 / (j + 1) for j in range(blocks)) / blocks, rel=1e-4)


def test_measures_of_simple_cases():
    assert effective_rank(torch.ones(4)) == pytest.approx(4) and effective_rank(torch.tensor([1.0, 0, 0])) == 1
    line = torch.arange(5.0)[:, None] * torch.tensor([1.0, 2.0, 0.5])
    share, cv = line_fit(line)
    assert share == pytest.approx(1.0) and cv == pytest.approx(0.0, abs=1e-6)  # a line, equal steps
    zigzag = torch.tensor([[0.0, 0], [1, 1], [2, 0], [3, 1]])
    assert line_fit(zigzag)[0] < 0.95


def test_a_network_at_initialisation_is_not_aligned():
    scale = dataclasses.replace(alignment.QUICK, width=32, inputs=4, k=6)
    m = alignment.fc_measures(4, True, scale, seed=0, trained=False)
    assert m["ra2_within_block"] < 0.4 and m["test_top1"] < 40  # random vectors in 32 dimensions, chance accuracy


def test_the_command_writes_its_numbers_and_figures(tmp_path, monkeypatch, digits_resnet20, capsys):
    monkeypatch.setattr(alignment, "QUICK", alignment.Scale(depths=(2, 4), width=16, epochs=2, inputs=2, k=4,
                                                            conv_inputs=1, conv_k=3))
    main(["experiment", "alignment", "--quick", "--checkpoint", str(digits_resnet20), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "alignment.json").read_text())
    assert set(saved["fc"]) == {"residual", "plain", "residual_init"} and set(saved["fc"]["plain"]) == {"2", "4"}
    assert saved["ra4"]["depths"] == [2, 4] and isinstance(saved["ra4"]["exponent"], float)
    (conv,) = saved["conv"].values()
    assert len(conv["ra2_matrix"]) == 9 and conv["ra2_matrix"][3][3] is None  # a block that changes the shape
    assert all((tmp_path / f"alignment_ra{i}.png").stat().st_size > 5000 for i in (2, 3, 4))
    assert "RA4: top singular value ~ depth^" in capsys.readouterr().out


def test_checkpoints_without_post_activation_blocks_are_refused_in_one_line(tmp_path, monkeypatch, digits_resnet20,
                                                                            capsys):
    """The conv measures read each block's residual branch: a network of other blocks is named, not crashed on."""
    evaluate = importlib.import_module("resnets.engine.evaluate")  # the package exports a function of that name

    real = evaluate.load_checkpoint_and_data

    def as_fast_network(path, *args, **kwargs):
        loaded = real(path, *args, **kwargs)
        return dataclasses.replace(loaded, model=resnets.create_model("fastresnet8", num_classes=10),
                                   checkpoint={**loaded.checkpoint, "config": {"model": "fastresnet8"}})

    monkeypatch.setattr(evaluate, "load_checkpoint_and_data", as_fast_network)
    assert main(["experiment", "alignment", "--quick", "--checkpoint", str(digits_resnet20),
                 "--out", str(tmp_path)]) == 2
    assert "holds fastresnet8: the alignment measures take post-activation ResNet blocks" in capsys.readouterr().err
