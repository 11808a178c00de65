"""`resnets analyze explain` on a real checkpoint and image."""
from PIL import Image

from resnets.cli import main


def test_explain_writes_a_heatmap(tree_run, tmp_path, capsys):
    tree, ckpt, _ = tree_run
    image = sorted(tree.rglob("*.png"))[0]
    assert main(["analyze", "explain", str(ckpt), str(image), "--out", str(tmp_path), "--topk", "2"]) in (0, None)
    out = capsys.readouterr().out
    assert "Grad-CAM for" in out
    png = tmp_path / f"{image.stem}_gradcam.png"
    assert Image.open(png).size == (512, 256)  # the image and its heatmap, side by side
    assert main(["analyze", "explain", str(ckpt), str(image), "--target", "zebra", "--out", str(tmp_path)]) == 2
    assert "unknown class 'zebra'" in capsys.readouterr().err
