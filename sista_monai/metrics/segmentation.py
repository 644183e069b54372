"""Segmentation metrics per image on binary masks, with a stated rule for empty masks.

Metrics, per image on binary masks (:func:`dice_iou`), the SIIM-ACR (Kaggle) rule for empty masks: an image
whose ground truth AND prediction are both empty scores Dice = IoU = 1; an empty ground truth with a
non-empty prediction (or the reverse) scores 0. ``mean_dice`` averages over all images (the paper's metric),
``positive_dice`` over the images whose ground truth is not empty. MONAI's ``DiceMetric`` and ``MeanIoU``
with ``ignore_empty=False`` follow the same rule (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "EMPTY_MASK_RULE",
    "dice_iou",
    "segmentation_summary",
]


EMPTY_MASK_RULE = (
    "per image; empty ground truth and empty prediction: Dice = IoU = 1; exactly one of them empty: 0 "
    "(SIIM-ACR rule); mean_dice and mean_iou average over all images, positive_dice over images with a "
    "non-empty ground truth"
)
"""How empty masks are scored (written to ``eval/metrics.json``)."""


def dice_iou(
    prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of binary masks, with the empty-mask rule of :data:`EMPTY_MASK_RULE`.

    Args:
        prediction: ``(B, ...)`` binary (or boolean) masks; values > 0.5 are foreground.
        target: ground truth of the same shape.

    Returns:
        ``(dice, iou)``, each a float tensor of shape ``(B,)``.

    Raises:
        ValueError: shapes differ.
    """
    pred = torch.as_tensor(prediction).float() > 0.5
    true = torch.as_tensor(target).float() > 0.5
    if pred.shape != true.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(true.shape)} differ in shape")
    pred, true = pred.reshape(pred.shape[0], -1).float(), true.reshape(true.shape[0], -1).float()
    intersection = (pred * true).sum(1)
    sizes = pred.sum(1) + true.sum(1)
    union = sizes - intersection
    both_empty = sizes == 0
    dice = torch.where(both_empty, torch.ones_like(sizes), 2 * intersection / sizes.clamp_min(1))
    iou = torch.where(both_empty, torch.ones_like(sizes), intersection / union.clamp_min(1))
    return dice, iou


def segmentation_summary(dice: torch.Tensor, iou: torch.Tensor, positive: torch.Tensor) -> dict[str, Any]:
    """``mean_dice``, ``mean_iou``, ``positive_dice`` (None without positive images), counts."""
    positive = positive.bool()
    n = int(dice.numel())
    return {
        "mean_dice": float(dice.mean()) if n else None,
        "mean_iou": float(iou.mean()) if n else None,
        "positive_dice": float(dice[positive].mean()) if bool(positive.any()) else None,
        "positive_iou": float(iou[positive].mean()) if bool(positive.any()) else None,
        "n": n,
        "positives": int(positive.sum()),
    }
