"""Image-free baselines of the downstream tasks: what a probe must beat to have learnt anything from the image.

A downstream score means little next to chance alone; it must beat the strongest predictor that never looks at
the image, fitted on the same labelled training images the probe sees:

* **Segmentation** (:func:`segmentation_baselines`): the *all-empty* prediction (under the SIIM-ACR empty rule its
  mean Dice is the share of test images without a pneumothorax) and the *constant mask* — the pixels where at
  least a fraction ``t`` of the labelled training masks with a pneumothorax are foreground, ``t`` chosen on those
  training masks for the highest Dice, predicted on every test image.
* **Detection** (:func:`detection_baseline`): the *constant boxes* — every labelled training box, scored by its
  mean IoU with the training boxes (a box where many fall scores high), predicted on every test image.
* **Classification**: a constant score has AUROC 0.5 exactly; no fit is needed.

Scores use the tasks' own metrics (:func:`~sista_monai.metrics.dice_iou` with its empty rule,
:func:`~sista_monai.metrics.detection_map`), so a baseline and a probe are judged alike.
The masks are compared at the resolution they are stored in, the boxes in the datalist's pixel frame: both
metrics are unchanged by one uniform rescaling of every image, which is what the bundles' resize does to
images of one size (the demo's, RSNA's and SIIM's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CONSTANT_SCORE_AUROC", "constant_mask", "detection_baseline", "segmentation_baselines"]

CONSTANT_SCORE_AUROC = 0.5
"""AUROC of any predictor that gives every image the same score (ties count half)."""


def constant_mask(training_masks: np.ndarray) -> tuple[np.ndarray, float | None]:
    """The best fixed mask for the training masks with a finding, and the foreground frequency ``t`` that makes it.

    Args:
        training_masks: ``(N, H, W)`` binary masks of the labelled training images.

    Returns:
        ``(mask, t)``: ``mask`` ``(H, W)`` bool, the pixels that are foreground in at least a share ``t`` of the
        non-empty training masks, ``t`` chosen among the shares that occur for the highest mean Dice over those
        masks (the lowest such ``t`` on ties). With no non-empty training mask: an empty mask and ``None``.
    """
    from sista_monai.metrics import dice_iou

    masks = np.asarray(training_masks) > 0.5
    positive = masks[masks.reshape(len(masks), -1).any(1)] if len(masks) else masks
    if not len(positive):
        return np.zeros(masks.shape[1:], dtype=bool), None
    frequency = positive.mean(0)
    best_mask, best_t, best_dice = np.zeros(masks.shape[1:], dtype=bool), None, -1.0
    for t in sorted({float(f) for f in np.unique(frequency) if f > 0}):
        candidate = frequency >= t
        dice, _ = dice_iou(np.repeat(candidate[None], len(positive), 0), positive)
        score = float(dice.mean())
        if score > best_dice:
            best_mask, best_t, best_dice = candidate, t, score
    return best_mask, best_t


def segmentation_baselines(training_masks: np.ndarray, test_masks: np.ndarray) -> dict[str, Any]:
    """Test scores of the all-empty prediction and of the constant mask (:func:`constant_mask`).

    Args:
        training_masks: ``(N, H, W)`` binary masks of the labelled training images.
        test_masks: ``(M, H, W)`` binary masks of the test images (``M >= 1``).

    Returns:
        ``{"all_empty": summary, "constant_mask": summary | {"threshold": t}}``, each summary as
        :func:`~sista_monai.metrics.segmentation_summary` gives it (``mean_dice``,
        ``positive_dice``...), and ``best_mean_dice``: the higher mean Dice of the two.

    Raises:
        ValueError: no test mask, or training and test masks of different sizes.
    """
    from sista_monai.metrics import dice_iou, segmentation_summary

    test = np.asarray(test_masks) > 0.5
    training = np.asarray(training_masks) > 0.5
    if not len(test):
        raise ValueError("no test mask to score the baselines on")
    if len(training) and training.shape[1:] != test.shape[1:]:
        raise ValueError(f"training masks {training.shape[1:]} and test masks {test.shape[1:]} differ in size")
    positive = torch.as_tensor(test.reshape(len(test), -1).any(1))
    mask, threshold = constant_mask(training if len(training) else np.zeros((0, *test.shape[1:]), dtype=bool))
    results: dict[str, Any] = {}
    for name, prediction in (
        ("all_empty", np.zeros_like(test)),
        ("constant_mask", np.repeat(mask[None], len(test), 0)),
    ):
        dice, iou = dice_iou(prediction, test)
        results[name] = segmentation_summary(dice, iou, positive)
    results["constant_mask"]["threshold"] = threshold
    results["best_mean_dice"] = max(results["all_empty"]["mean_dice"], results["constant_mask"]["mean_dice"])
    return results


def _xyxy(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.concatenate([array[:, :2], array[:, :2] + array[:, 2:]], axis=1)


def detection_baseline(
    training_boxes: Sequence[Sequence[Sequence[float]]],
    test_boxes: Sequence[Sequence[Sequence[float]]],
    max_detections: int = 100,
) -> dict[str, Any]:
    """Test mAP of the constant boxes: every labelled training box predicted on every test image.

    Each training box is scored by its mean IoU with all training boxes (itself included), so the boxes where
    training findings cluster rank first; the ``max_detections`` highest are kept, the limit
    :func:`~sista_monai.metrics.detection_map` applies to a probe.

    Args:
        training_boxes: per labelled training image, its boxes as ``[x, y, width, height]`` (one class).
        test_boxes: per test image, its ground-truth boxes, same format.
        max_detections: boxes kept per image.

    Returns:
        :func:`~sista_monai.metrics.detection_map`'s result (``map``, ``map50``...) plus
        ``boxes``: the number of constant boxes predicted on each image.
    """
    from monai.data.box_utils import box_iou

    from sista_monai.metrics import detection_map

    pool = _xyxy([box for boxes in training_boxes for box in boxes])
    if len(pool):
        scores = np.asarray(box_iou(torch.as_tensor(pool), torch.as_tensor(pool)), dtype=float).mean(1)
        order = np.argsort(-scores, kind="stable")[:max_detections]
        pool, scores = pool[order], scores[order]
    else:
        scores = np.zeros(0)
    prediction = {"box": pool, "label": np.zeros(len(pool), dtype=int), "score": scores}
    targets = [{"box": _xyxy(boxes), "label": np.zeros(len(boxes), dtype=int)} for boxes in test_boxes]
    result = detection_map([prediction] * len(targets), targets, max_detections=max_detections)
    result["boxes"] = int(len(pool))
    return result
