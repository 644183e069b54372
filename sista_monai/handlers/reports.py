"""Evaluation reports: ``eval/metrics.json`` plus plots, written once by rank 0 when an evaluator completes.

Every report is an :class:`EvaluationReport`: it collects what it needs at each iteration (on every rank), gathers
it across ranks at completion, and on rank 0 summarises it, writes ``<output_dir>/<metrics_file>`` atomically and
logs one line. :class:`ClassificationReport`, :class:`SegmentationReport` and :class:`DetectionReport` serve the
downstream bundles, :class:`PretrainingReport` the pretraining bundle's test split (run with it attached by
:func:`write_test_report`, the bundle configs' ``finalize`` step).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from monai.handlers import from_engine
from monai.utils import IgniteInfo, evenly_divisible_all_gather, min_version, optional_import
from PIL import Image

from sista_monai.distributed import is_distributed, is_main_process
from sista_monai.io.files import write_json
from sista_monai.metrics.classification import THRESHOLD_METRICS, _as_column, binary_classification_metrics, roc_curve
from sista_monai.metrics.detection import (
    MGCA_IOU_RANGE,
    _all_thresholds,
    _gather,
    _record,
    detection_map,
    detection_map_rule,
    detection_output,
)
from sista_monai.metrics.pretraining import summarise_test_metrics
from sista_monai.metrics.segmentation import EMPTY_MASK_RULE, dice_iou, segmentation_summary
from sista_monai.visualize import overlay_boxes, overlay_image, plot_roc_curve

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "EvaluationReport",
    "PretrainingReport",
    "shown",
    "ClassificationReport",
    "SegmentationReport",
    "DetectionReport",
    "write_test_report",
]

logger = logging.getLogger(__name__)


def _with_overlays(
    output_dir: str | os.PathLike,
    summary: dict[str, Any],
    engine_metrics: Mapping[str, Any],
    overlays: Sequence[Any] = (),
    split: str = "test",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Complete a downstream report with ``engine_metrics``, the overlay PNGs and ``extra``; returns ``summary``.

    The engine's scalar metrics go under ``engine_metrics`` (NaN as ``null``); the overlays (PIL images) are
    saved as ``<output_dir>/overlays/<split>_<k>.png`` (numbered: no file or patient names) and listed under
    ``overlays``; ``extra`` entries are added last.
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
    return summary


def shown(value: float | None) -> str:
    """A metric for a log line: 4 decimals, ``n/a`` when undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


class EvaluationReport:
    """The pattern of every evaluation report: collect per iteration, gather at completion, write on rank 0.

    Attached to an evaluator, it resets at every epoch start, calls :meth:`collect` after every iteration (on
    every rank), and at completion calls :meth:`gather` (on every rank: it may hold a collective), then on rank
    0 only :meth:`summarise`, writes the summary to ``<output_dir>/<metrics_file>`` atomically (indented,
    sorted keys), keeps it as ``self.summary`` and calls :meth:`log`. Subclasses implement :meth:`reset`,
    :meth:`collect`, :meth:`gather`, :meth:`summarise` and :meth:`log`; only numbers leave the engine.

    Args:
        output_dir: the bundle's ``eval/`` folder.
        split: the split's name in the report.
        extra: further entries of the report (provenance: encoder file, label fraction, seed...).
        metrics_file: file name of the report.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        split: str = "test",
        extra: Mapping[str, Any] | None = None,
        metrics_file: str = "metrics.json",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.split = split
        self.extra = dict(extra or {})
        self.metrics_file = metrics_file
        self.summary: dict[str, Any] = {}
        self.reset()

    def attach(self, engine: Engine) -> None:
        """Reset at every epoch start, collect each iteration, report at completion."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget what was collected."""

    def collect(self, engine: Engine) -> None:
        """Keep what the report needs from ``engine.state.output``."""

    def gather(self) -> Any:
        """What was collected, from every rank (called on every rank)."""
        return None

    def summarise(self, engine: Engine, gathered: Any) -> dict[str, Any]:
        """The report's content (rank 0; may write plots beside it)."""
        raise NotImplementedError

    def log(self, engine: Engine, summary: Mapping[str, Any]) -> None:
        """One line with the headline figures (rank 0)."""

    def __call__(self, engine: Engine) -> None:
        """Gather, then on rank 0 summarise, write ``metrics_file`` and log."""
        gathered = self.gather()
        if not is_main_process():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        summary = self.summarise(engine, gathered)
        write_json(self.output_dir / self.metrics_file, summary)
        self.summary = summary
        self.log(engine, summary)


class ClassificationReport(EvaluationReport):
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
        self.threshold = float(threshold)
        self.metric_names = list(metric_names) if metric_names is not None else ["auroc", *THRESHOLD_METRICS]
        self.output_transform = output_transform
        self.roc_file = roc_file
        super().__init__(output_dir, split, extra, metrics_file)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected predictions."""
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def collect(self, engine: Engine) -> None:
        """Keep the iteration's probabilities and labels."""
        scores, labels = self.output_transform(engine.state.output)
        self.scores.append(_as_column(scores).detach().cpu())
        self.labels.append(_as_column(labels).detach().cpu())

    def gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The probabilities and labels of every rank."""
        scores = torch.cat(self.scores) if self.scores else torch.zeros(0, 1)
        labels = torch.cat(self.labels) if self.labels else torch.zeros(0, 1)
        if is_distributed():
            scores = evenly_divisible_all_gather(scores, concat=True)
            labels = evenly_divisible_all_gather(labels, concat=True)
        return scores, labels

    def summarise(self, engine: Engine, gathered: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        """The threshold metrics, the confusion counts and the ROC plot."""
        scores, labels = gathered
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
        return summary

    def log(self, engine: Engine, summary: Mapping[str, Any]) -> None:
        """Images, positives and every metric at the threshold."""
        metrics = ", ".join(f"{k} {shown(v)}" for k, v in summary["metrics"].items())
        logger.info(
            "%s split (%d images, %d positive): %s at threshold %g",
            self.split,
            summary["n"],
            summary["positives"],
            metrics,
            self.threshold,
        )


class SegmentationReport(EvaluationReport):
    """Write ``metrics.json`` and overlay PNGs when a segmentation evaluator completes.

    Every iteration, the decollated post-processed output gives (binary prediction, ground truth, image);
    per-image Dice and IoU (:func:`dice_iou`) are kept, gathered across ranks, and rank 0 writes
    ``<output_dir>/metrics.json`` (``mean_dice``, ``mean_iou``, ``positive_dice``, ``positive_iou``, also under
    ``metrics`` as in the classification report, counts,
    the empty-mask rule, the evaluator's own metrics under ``engine_metrics`` and the ``extra`` entries) and
    ``<output_dir>/overlays/<split>_<k>.png`` for the first ``num_overlays`` images of rank 0 (numbered: no
    file or patient names leave the engine).

    Args:
        output_dir: the bundle's ``eval/`` folder.
        extra: further entries of ``metrics.json``.
        split: the split's name.
        num_overlays: overlay PNGs to write.
        output_transform: ``engine.state.output`` → ``(predictions, labels, images)`` lists.
        intensity_mean: normalisation mean (undone in the overlays).
        intensity_std: normalisation std.
        metrics_file: file name of the report.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        extra: Mapping[str, Any] | None = None,
        split: str = "test",
        num_overlays: int = 4,
        output_transform: Callable[[Any], Any] = from_engine(["pred_label", "label", "image"]),
        intensity_mean: float = 0.5,
        intensity_std: float = 0.25,
        metrics_file: str = "metrics.json",
    ) -> None:
        self.num_overlays = int(num_overlays)
        self.output_transform = output_transform
        self.intensity_mean = float(intensity_mean)
        self.intensity_std = float(intensity_std)
        super().__init__(output_dir, split, extra, metrics_file)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected scores."""
        self.dice: list[torch.Tensor] = []
        self.iou: list[torch.Tensor] = []
        self.positive: list[torch.Tensor] = []
        self.overlays: list[Image.Image] = []

    def collect(self, engine: Engine) -> None:
        """Score the iteration's images and keep the first overlays."""
        predictions, labels, images = self.output_transform(engine.state.output)
        pred = torch.stack([torch.as_tensor(p).detach().cpu().float() for p in predictions])
        true = torch.stack([torch.as_tensor(t).detach().cpu().float() for t in labels])
        dice, iou = dice_iou(pred, true)
        self.dice.append(dice)
        self.iou.append(iou)
        self.positive.append((true.reshape(true.shape[0], -1) > 0.5).any(1).float())
        for p, t, image in zip(pred, true, images, strict=True):
            if len(self.overlays) >= self.num_overlays:
                break
            self.overlays.append(overlay_image(torch.as_tensor(image), t, p, self.intensity_mean, self.intensity_std))

    def gather(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image Dice, IoU and ground-truth positivity of every rank."""
        values = [torch.cat(v) if v else torch.zeros(0) for v in (self.dice, self.iou, self.positive)]
        if is_distributed():
            values = [evenly_divisible_all_gather(v, concat=True) for v in values]
        return values[0], values[1], values[2]

    def summarise(self, engine: Engine, gathered: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        """Dice and IoU over all and over positive images, with the empty-mask rule, and the overlays."""
        dice, iou, positive = gathered
        summary: dict[str, Any] = {"split": self.split, **segmentation_summary(dice, iou, positive)}
        summary["metrics"] = {k: summary[k] for k in ("mean_dice", "mean_iou", "positive_dice", "positive_iou")}
        summary["empty_mask_rule"] = EMPTY_MASK_RULE
        return _with_overlays(self.output_dir, summary, engine.state.metrics, self.overlays, self.split, self.extra)

    def log(self, engine: Engine, summary: Mapping[str, Any]) -> None:
        """Images, positives, mean Dice and IoU, Dice on positive images."""
        logger.info(
            "%s split (%d images, %d with pneumothorax): mean Dice %s, mean IoU %s, Dice on positive images %s",
            self.split,
            summary["n"],
            summary["positives"],
            shown(summary["mean_dice"]),
            shown(summary["mean_iou"]),
            shown(summary["positive_dice"]),
        )


class DetectionReport(EvaluationReport):
    """Write ``metrics.json`` and overlay PNGs when a detection evaluator completes.

    Every iteration the ``output_transform`` gives ``(predictions, targets, images)`` (default:
    :func:`detection_output` on the evaluator's list of per-image dicts); the boxes are kept, gathered across
    ranks at completion, and rank 0 writes ``<output_dir>/metrics.json`` (:func:`detection_map`'s values:
    ``map``, ``map50``, ``mar``, ``ap_by_iou``, ``ap_by_class``, ``iou_thresholds``, the counts; the split;
    ``metrics`` = ``{"map", "map50"}`` for ``python -m sista_monai.experiments.compare``; ``iou_rule``; the
    evaluator's own metrics under ``engine_metrics``; the overlay paths; the ``extra`` entries) and
    ``<output_dir>/overlays/<split>_<k>.png`` (:func:`overlay_boxes`) for the first ``num_overlays`` images of
    rank 0, numbered: no file or patient names leave the engine.

    Args:
        output_dir: the bundle's ``eval/`` folder.
        extra: further entries of ``metrics.json``.
        split: the split's name.
        num_overlays: overlay PNGs to write.
        output_transform: ``engine.state.output`` → ``(predictions, targets, images)``.
        num_classes: number of classes.
        class_names: class names (keys of ``ap_by_class``).
        iou_range: ``(start, stop, step)`` of the ``map`` thresholds.
        iou_list: further thresholds reported in ``ap_by_iou``.
        max_detections: detections kept per image and class.
        intensity_mean: normalisation mean (undone in the overlays).
        intensity_std: normalisation std.
        overlay_score_threshold: predictions scoring below it are left out of the overlays (``None``: all).
        metrics_file: file name of the report.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        extra: Mapping[str, Any] | None = None,
        split: str = "test",
        num_overlays: int = 4,
        output_transform: Callable[[Any], Any] = detection_output,
        num_classes: int = 1,
        class_names: Sequence[str] | None = ("Lung Opacity",),
        iou_range: Sequence[float] = MGCA_IOU_RANGE,
        iou_list: Sequence[float] = (0.5,),
        max_detections: int = 100,
        intensity_mean: float = 0.5,
        intensity_std: float = 0.25,
        overlay_score_threshold: float | None = 0.5,
        metrics_file: str = "metrics.json",
    ) -> None:
        _all_thresholds(iou_range, [0.5, *iou_list])
        self.num_overlays = int(num_overlays)
        self.output_transform = output_transform
        self.num_classes = int(num_classes)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        self.iou_range = tuple(float(v) for v in iou_range)
        self.iou_list = tuple(float(v) for v in iou_list)
        self.max_detections = int(max_detections)
        self.intensity_mean = float(intensity_mean)
        self.intensity_std = float(intensity_std)
        self.overlay_score_threshold = None if overlay_score_threshold is None else float(overlay_score_threshold)
        super().__init__(output_dir, split, extra, metrics_file)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected boxes and overlays."""
        self.predictions: list[dict[str, np.ndarray]] = []
        self.targets: list[dict[str, np.ndarray]] = []
        self.overlays: list[Image.Image] = []

    def collect(self, engine: Engine) -> None:
        """Keep the iteration's boxes and draw the first overlays."""
        predictions, targets, images = self.output_transform(engine.state.output)
        if not len(predictions) == len(targets) == len(images):
            raise ValueError(f"{len(predictions)} predictions, {len(targets)} targets and {len(images)} images")
        for prediction, target, image in zip(predictions, targets, images, strict=True):
            pred, true = _record(prediction, with_score=True), _record(target, with_score=False)
            self.predictions.append(pred)
            self.targets.append(true)
            if image is not None and len(self.overlays) < self.num_overlays:
                self.overlays.append(
                    overlay_boxes(
                        image,
                        true["box"],
                        pred["box"],
                        pred["score"],
                        self.intensity_mean,
                        self.intensity_std,
                        self.overlay_score_threshold,
                    )
                )

    def gather(self) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """The predicted and ground-truth boxes of every rank."""
        return _gather(self.predictions), _gather(self.targets)

    def summarise(self, engine: Engine, gathered: tuple[list[Any], list[Any]]) -> dict[str, Any]:
        """mAP over the IoU range, mAP@0.5, recall, per-threshold and per-class AP, and the overlays."""
        predictions, targets = gathered
        scores = detection_map(
            predictions, targets, self.num_classes, self.iou_range, self.iou_list, self.max_detections, self.class_names
        )
        summary: dict[str, Any] = {"split": self.split, **scores}
        summary["metrics"] = {"map": scores["map"], "map50": scores["map50"]}
        summary["iou_rule"] = detection_map_rule(self.iou_range, self.max_detections)
        return _with_overlays(self.output_dir, summary, engine.state.metrics, self.overlays, self.split, self.extra)

    def log(self, engine: Engine, summary: Mapping[str, Any]) -> None:
        """Images, ground-truth boxes, mAP over the range and at 0.5."""
        logger.info(
            "%s split (%d images, %d ground-truth boxes): mAP@[%.2f:%.2f] %s, mAP@0.5 %s",
            self.split,
            summary["images"],
            summary["gt_boxes"],
            self.iou_range[0],
            self.iou_range[1],
            shown(summary["map"]),
            shown(summary["map50"]),
        )


class PretrainingReport(EvaluationReport):
    """The pretraining bundle's test report: grounding, retrieval, SIA flags and STA sparsity against baselines.

    The figures come from the evaluator's own Ignite metrics (configured in ``train.json``), arranged by
    :func:`~sista_monai.metrics.pretraining.summarise_test_metrics` under the keys of ``eval/metrics.json`` (a
    contract other tools read).

    Args:
        output_dir: the bundle's ``eval/`` folder.
        info: configuration facts recorded in the report (see :func:`summarise_test_metrics`).
        metrics_file: file name of the report.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        info: Mapping[str, Any] | None = None,
        metrics_file: str = "metrics.json",
    ) -> None:
        self.info = dict(info or {})
        super().__init__(output_dir, "test", None, metrics_file)

    def summarise(self, engine: Engine, gathered: Any) -> dict[str, Any]:
        """The report of :func:`summarise_test_metrics` on the evaluator's metrics."""
        n_pairs = len(cast(Any, engine).data_loader.dataset)
        return summarise_test_metrics(dict(engine.state.metrics), n_pairs, self.info)

    def log(self, engine: Engine, summary: Mapping[str, Any]) -> None:
        """Every headline figure beside its baseline."""
        r, g, sia = summary["retrieval"], summary["grounding"], summary["sia"]
        logger.info(
            "test (%d pairs): lesion grounding %.3f (image-free prior %.3f, text pointer %.3f, chance %.3f, %d trials); "
            "counterfactual grounding %.3f (image-free prior %.3f, text pointer %.3f, %d trials); "
            "zone grounding %.3f (prior %.3f, chance %.3f); semantic precision@5 %.3f (chance %.3f); "
            "image->report R@1/5/10 = %.3f/%.3f/%.3f (chance R@5 %.3f); report->image R@5 = %.3f; "
            "SIA flags (%s, theta %s): precision %.3f, recall %.3f, rate %.4f (base rate %.3f), "
            "pairs not both normal: precision %.3f, recall %.3f (base rate %.3f); "
            "STA patches kept %.3f; targets met: %s",
            summary["n_pairs"],
            g["lesion"]["accuracy"],
            g["lesion"]["prior"],
            g["lesion"]["text_pointer"],
            g["lesion"]["chance"],
            g["lesion"]["trials"],
            g["counterfactual"]["follow_rate"],
            g["counterfactual"]["prior"],
            g["counterfactual"]["text_pointer"],
            g["counterfactual"]["trials"],
            g["zone"]["accuracy"],
            g["zone"]["prior"],
            g["zone"]["chance"],
            r["semantic"]["precision_at_5"],
            r["semantic"]["chance"],
            r["image_to_report"]["R@1"],
            r["image_to_report"]["R@5"],
            r["image_to_report"]["R@10"],
            r["chance"]["R@5"],
            r["report_to_image"]["R@5"],
            sia["source"],
            sia["threshold"],
            sia["flag_precision"],
            sia["flag_recall"],
            sia["flag_rate"],
            sia["base_rate"],
            sia.get("abnormal_flag_precision", float("nan")),
            sia.get("abnormal_flag_recall", float("nan")),
            sia.get("abnormal_base_rate", float("nan")),
            summary["sta"]["patches_kept"],
            summary["targets_met"],
        )


def write_test_report(
    evaluator: Any,
    output_path: str | os.PathLike,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the test evaluator with a :class:`PretrainingReport` attached (its other handlers, e.g. the alignment heat
    maps, are the evaluator's own).

    Args:
        evaluator: the test evaluator.
        output_path: where ``metrics.json`` goes (written atomically by rank 0).
        info: configuration facts recorded in the report (see
            :func:`~sista_monai.metrics.pretraining.summarise_test_metrics`).

    Returns:
        The summary written (on rank 0; an empty dict on the other ranks).
    """
    path = Path(output_path)
    report = PretrainingReport(path.parent, info=info, metrics_file=path.name)
    report.attach(evaluator)
    evaluator.run()
    return report.summary
