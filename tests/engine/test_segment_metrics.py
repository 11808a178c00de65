"""Segmentation metrics against counts made by hand."""
import pytest
import torch

from resnets.data.masks import IGNORE
from resnets.engine.segment_metrics import SegMetrics, format_seg_metrics, pixel_confusion


def test_confusion_iou_and_pixel_accuracy_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    c = pixel_confusion(pred, target, 4)
    assert c.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    m = SegMetrics("val", ["a", "b", "c", "d"], c, images=1)
    # IoU: a 1/(3+2-1)=1/4, b 2/(3+3-2)=1/2, c 1/(1+2-1)=1/2, d absent
    assert m.iou == pytest.approx([25.0, 50.0, 50.0, None])
    assert m.miou == pytest.approx(125 / 3) and m.pixel_acc == pytest.approx(400 / 7)
    assert m.summary()["iou"]["d"] is None and "d  (absent)" in format_seg_metrics(m)


def test_perfect_and_all_ignored_predictions():
    t = torch.randint(0, 3, (5, 6, 7))
    assert SegMetrics("x", list("abc"), pixel_confusion(t, t, 3), 5).miou == pytest.approx(100)
    ignored = torch.full((4, 4), IGNORE)
    empty = SegMetrics("x", list("abc"), pixel_confusion(torch.zeros(4, 4), ignored, 3), 1)
    assert empty.miou == 0 and empty.pixel_acc == 0
