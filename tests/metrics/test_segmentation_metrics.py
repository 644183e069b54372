"""Dice/IoU on hand-made masks, with the SIIM empty-mask rule, checked against MONAI's metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU

from sista_monai.metrics import EMPTY_MASK_RULE, dice_iou, segmentation_summary


def _masks(*arrays: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.as_tensor(a, dtype=torch.float32)[None] for a in arrays])


def _square(top: int, left: int, size: int = 4, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


def test_dice_and_iou_on_hand_made_masks() -> None:
    empty = np.zeros((16, 16), dtype=np.uint8)
    a, b = _square(0, 0), _square(8, 8)  # disjoint
    half = _square(0, 2)  # shares 8 of its 16 pixels with a
    pred = _masks(a, a, empty, a, empty, half)
    true = _masks(a, b, empty, empty, a, a)
    dice, iou = dice_iou(pred, true)
    assert dice.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    assert iou.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0, 0.0, 8 / 24])
    summary = segmentation_summary(dice, iou, (true.flatten(1) > 0).any(1))
    assert summary["n"] == 6 and summary["positives"] == 4
    assert summary["mean_dice"] == pytest.approx(2.5 / 6)
    assert summary["positive_dice"] == pytest.approx(1.5 / 4)
    assert "empty ground truth and empty prediction: Dice = IoU = 1" in EMPTY_MASK_RULE


def test_monai_metrics_follow_the_same_empty_rule() -> None:
    """The evaluators' MONAI metrics (ignore_empty=False) score exactly as dice_iou does."""
    rng = np.random.default_rng(0)
    empty = np.zeros((16, 16), dtype=np.uint8)
    masks = [rng.random((16, 16)) > 0.7 for _ in range(3)]
    pred = _masks(masks[0], masks[1], empty, masks[2], empty)
    true = _masks(masks[0], masks[2], empty, empty, masks[1])
    dice, iou = dice_iou(pred, true)
    monai_dice = DiceMetric(include_background=True, ignore_empty=False, reduction="none")(pred, true)
    monai_iou = MeanIoU(include_background=True, ignore_empty=False, reduction="none")(pred, true)
    torch.testing.assert_close(monai_dice.flatten(), dice)
    torch.testing.assert_close(monai_iou.flatten(), iou)


def test_dice_iou_accepts_numpy_and_rejects_mismatched_shapes() -> None:
    a = _square(2, 2)[None]
    dice, iou = dice_iou(a, a.astype(bool))
    assert dice.tolist() == iou.tolist() == [1.0]
    with pytest.raises(ValueError, match="shape"):
        dice_iou(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
