"""Binary classification metrics, the ROC curve plot and the ``eval/metrics.json`` report.

The numbers come from MONAI: AUROC from :func:`monai.metrics.compute_roc_auc` (the ``ROCAUC`` Ignite
handler of the evaluator), accuracy, F1, sensitivity and specificity at the decision threshold from MONAI's
confusion-matrix metrics (the ``ConfusionMatrix`` handlers). :class:`ClassificationReport` is attached to the
test evaluator (MONAI ``SupervisedEvaluator``): it collects the probabilities and labels of the epoch, and at
the end writes ``metrics.json`` (the evaluator's metrics, the confusion counts, the run's provenance) and
``roc_curve.png`` with the AUROC in its legend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_roc_auc, get_confusion_matrix
from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "THRESHOLD_METRICS",
    "binary_classification_metrics",
    "roc_curve",
]

logger = logging.getLogger(__name__)

THRESHOLD_METRICS: dict[str, str] = {
    "accuracy": "accuracy",
    "f1": "f1 score",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}
"""Report name → MONAI confusion-matrix metric name (``monai.handlers.ConfusionMatrix(metric_name=...)``)."""


def _as_column(values: Any) -> torch.Tensor:
    if isinstance(values, (list, tuple)):
        if not values:
            return torch.zeros(0, 1)
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in values])
    tensor = torch.as_tensor(values, dtype=torch.float32)
    return tensor.reshape(-1, 1) if tensor.ndim < 2 else tensor


def _confusion_counts(probabilities: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[tp, fp, tn, fn]`` summed over the samples (MONAI's :func:`get_confusion_matrix`)."""
    predicted = (probabilities >= threshold).float()
    return get_confusion_matrix(predicted, labels, include_background=True).sum(dim=0)[0]


def binary_classification_metrics(
    probabilities: Sequence[float] | np.ndarray | torch.Tensor,
    labels: Sequence[float] | np.ndarray | torch.Tensor,
    threshold: float = 0.5,
) -> dict[str, float]:
    """AUROC, and accuracy/F1/sensitivity/specificity at ``threshold``, with the confusion counts.

    The same MONAI functions as the evaluator's ``ROCAUC`` and ``ConfusionMatrix`` handlers (for scripts and
    checks that have the predictions at hand rather than an engine).

    Args:
        probabilities: scores of the positive class, one per sample (higher = more likely positive).
        labels: 0/1 truth, one per sample.
        threshold: a sample is called positive when its score is ``>= threshold``.

    Returns:
        ``auroc`` (NaN with only one class present), ``accuracy``, ``f1``, ``sensitivity``, ``specificity``
        (NaN where undefined), ``tp``, ``fp``, ``tn``, ``fn``, ``n``, ``positives``.
    """
    scores, truth = _as_column(probabilities), _as_column(labels)
    if scores.shape != truth.shape:
        raise ValueError(f"probabilities {tuple(scores.shape)} and labels {tuple(truth.shape)} differ in shape")
    counts = _confusion_counts(scores, truth, threshold)
    # MONAI types the AUROC as any array-like; with the macro average of one column it is one number
    result = {"auroc": float(np.asarray(compute_roc_auc(scores, truth))) if truth.numel() else float("nan")}
    for name, monai_name in THRESHOLD_METRICS.items():
        result[name] = float(compute_confusion_matrix_metric(monai_name, counts))
    tp, fp, tn, fn = (int(v) for v in counts.tolist())
    result.update({"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": tp + fp + tn + fn, "positives": tp + fn})
    return result


def roc_curve(
    scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empirical ROC curve: false- and true-positive rates at every distinct score threshold.

    Tied scores form one point (no staircase through a tie), so the trapezoidal area under the curve equals the
    Mann–Whitney AUROC of :func:`monai.metrics.compute_roc_auc`.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` with threshold ``+inf``.

    Raises:
        ValueError: only one class present (the curve is undefined).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(labels, dtype=np.float64).ravel() >= 0.5
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"ROC curve needs both classes; got {positives} positives and {negatives} negatives")
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tps = np.cumsum(truth)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    fpr = np.r_[0.0, fps / negatives]
    tpr = np.r_[0.0, tps / positives]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    return fpr, tpr, thresholds
