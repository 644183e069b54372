"""Binary classification metrics, the ROC curve plot and the ``eval/metrics.json`` report.

The numbers come from MONAI: AUROC from :func:`monai.metrics.compute_roc_auc` (the ``ROCAUC`` Ignite
handler of the evaluator), accuracy, F1, sensitivity and specificity at the decision threshold from MONAI's
confusion-matrix metrics (the ``ConfusionMatrix`` handlers). :class:`ClassificationReport` is attached to the
test evaluator (MONAI ``SupervisedEvaluator``): it collects the probabilities and labels of the epoch, and at
the end writes ``metrics.json`` (the evaluator's metrics, the confusion counts, the run's provenance) and
``roc_curve.png`` with the AUROC in its legend.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers import from_engine
from monai.metrics import compute_confusion_matrix_metric, compute_roc_auc, get_confusion_matrix
from monai.utils import IgniteInfo, evenly_divisible_all_gather, min_version, optional_import

from sista_monai.handlers.export import atomic_write_bytes

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "THRESHOLD_METRICS",
    "binary_classification_metrics",
    "roc_curve",
    "plot_roc_curve",
    "ClassificationReport",
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
    result = {"auroc": float(compute_roc_auc(scores, truth)) if truth.numel() else float("nan")}
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


def plot_roc_curve(
    fpr: np.ndarray,
    tpr: np.ndarray,
    auroc: float,
    path: str | os.PathLike,
    title: str = "ROC curve",
    operating_point: tuple[float, float] | None = None,
    threshold: float | None = None,
) -> Path:
    """Draw the ROC curve with the AUROC in its legend to a PNG (matplotlib's Agg canvas, no display needed).

    Args:
        fpr: false-positive rates (see :func:`roc_curve`).
        tpr: true-positive rates.
        auroc: the AUROC written in the legend.
        path: the PNG file (written atomically).
        title: the plot title.
        operating_point: ``(1 - specificity, sensitivity)`` at the decision threshold, marked when given.
        threshold: the decision threshold, named in the legend with the operating point.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(fpr, tpr, color="tab:blue", linewidth=2, label=f"AUROC = {auroc:.3f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
    if operating_point is not None and all(math.isfinite(v) for v in operating_point):
        name = f"threshold {threshold:g}" if threshold is not None else "operating point"
        axes.plot(*operating_point, marker="o", color="tab:red", linestyle="none", label=name)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("1 - specificity (false-positive rate)")
    axes.set_ylabel("sensitivity (true-positive rate)")
    axes.set_title(title)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(Path(path), buffer.getvalue())


def write_eval_report(
    output_dir: str | os.PathLike,
    summary: dict[str, Any],
    engine_metrics: Mapping[str, Any],
    overlays: Sequence[Any] = (),
    split: str = "test",
    extra: Mapping[str, Any] | None = None,
    metrics_file: str = "metrics.json",
) -> dict[str, Any]:
    """Complete and write a downstream report: ``engine_metrics``, overlay PNGs, ``extra``, then ``metrics.json``.

    The engine's scalar metrics go under ``engine_metrics`` (NaN as ``null``); the overlays (PIL images) are
    saved as ``<output_dir>/overlays/<split>_<k>.png`` (numbered: no file or patient names) and listed under
    ``overlays``; ``extra`` entries are added last; the JSON is written atomically. Returns ``summary``.
    """
    output_dir = Path(output_dir)
    summary["engine_metrics"] = {
        k: None if math.isnan(float(v)) else float(v)
        for k, v in engine_metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    overlay_dir = output_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for k, overlay in enumerate(overlays):
        name = f"{split}_{k:02d}.png"
        overlay.save(overlay_dir / name)
        names.append(f"overlays/{name}")
    summary["overlays"] = names
    summary.update(extra or {})
    atomic_write_bytes(output_dir / metrics_file, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def shown(value: float | None) -> str:
    """A metric for a log line: 4 decimals, ``n/a`` when undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def _main_rank() -> bool:
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


class ClassificationReport:
    """Write ``metrics.json`` and ``roc_curve.png`` when a classification evaluator completes.

    Collects ``(probability, label)`` pairs every iteration (``output_transform`` of the decollated,
    post-processed output), gathers them across ranks, and on rank 0 writes:

    * ``<output_dir>/metrics.json``: the evaluator's metrics (``auroc`` and the threshold metrics computed by
      its MONAI/Ignite handlers), the decision threshold, the confusion counts, the split size and positives,
      and the ``extra`` entries (provenance: encoder file, label fraction, linear probe or fine-tuning, seed);
    * ``<output_dir>/roc_curve.png``: the ROC curve with the AUROC in its legend and the operating point.

    Only numbers leave the engine: no file names, no patient fields.

    Args:
        output_dir: the bundle's ``eval/`` folder.
        threshold: the decision threshold of the threshold metrics.
        metric_names: names in ``engine.state.metrics`` to report (default: ``auroc`` and
            :data:`THRESHOLD_METRICS`).
        extra: further entries of ``metrics.json``.
        split: the split's name in the report and the plot title.
        output_transform: ``engine.state.output`` → ``(probabilities, labels)``.
        metrics_file: file name of the report.
        roc_file: file name of the plot.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        threshold: float = 0.5,
        metric_names: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        split: str = "test",
        output_transform: Callable[[Any], tuple[Any, Any]] = from_engine(["pred", "label"]),
        metrics_file: str = "metrics.json",
        roc_file: str = "roc_curve.png",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.threshold = float(threshold)
        self.metric_names = list(metric_names) if metric_names is not None else ["auroc", *THRESHOLD_METRICS]
        self.extra = dict(extra or {})
        self.split = split
        self.output_transform = output_transform
        self.metrics_file = metrics_file
        self.roc_file = roc_file
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Reset at every epoch start, collect each iteration, report at completion."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected predictions."""
        self.scores, self.labels = [], []

    def collect(self, engine: Engine) -> None:
        """Keep the iteration's probabilities and labels."""
        scores, labels = self.output_transform(engine.state.output)
        self.scores.append(_as_column(scores).detach().cpu())
        self.labels.append(_as_column(labels).detach().cpu())

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.cat(self.scores) if self.scores else torch.zeros(0, 1)
        labels = torch.cat(self.labels) if self.labels else torch.zeros(0, 1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            scores = evenly_divisible_all_gather(scores, concat=True)
            labels = evenly_divisible_all_gather(labels, concat=True)
        return scores, labels

    def __call__(self, engine: Engine) -> None:
        """Write the report and the plot (rank 0)."""
        scores, labels = self._gathered()
        if not _main_rank():
            return
        counts = binary_classification_metrics(scores, labels, self.threshold)
        metrics = {
            name: _finite_or_none(float(engine.state.metrics.get(name, float("nan")))) for name in self.metric_names
        }
        summary: dict[str, Any] = {
            "split": self.split,
            "n": counts["n"],
            "positives": counts["positives"],
            "decision_threshold": self.threshold,
            "metrics": metrics,
            "confusion": {k: counts[k] for k in ("tp", "fp", "tn", "fn")},
            **self.extra,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        auroc = metrics.get("auroc")
        if auroc is not None and 0 < counts["positives"] < counts["n"]:
            fpr, tpr, _ = roc_curve(scores.numpy(), labels.numpy())
            point = (1.0 - counts["specificity"], counts["sensitivity"])
            plot_roc_curve(
                fpr,
                tpr,
                auroc,
                self.output_dir / self.roc_file,
                title=f"ROC curve, {self.split} split (n = {counts['n']})",
                operating_point=point,
                threshold=self.threshold,
            )
            summary["roc_curve"] = self.roc_file
        else:
            logger.warning("the %s split has a single class: no AUROC and no ROC curve", self.split)
            summary["roc_curve"] = None
        atomic_write_bytes(
            self.output_dir / self.metrics_file, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
        )
        self.summary = summary
        shown = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in metrics.items())
        engine.logger.info(
            "%s split (%d images, %d positive): %s at threshold %g",
            self.split,
            counts["n"],
            counts["positives"],
            shown,
            self.threshold,
        )
