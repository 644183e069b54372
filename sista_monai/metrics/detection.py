"""Detection metrics of the RSNA pneumonia bundle: COCO-style mAP from MONAI, box overlays and the report.

Boxes are 2-D, in MONAI's ``StandardMode`` ``(x1, y1, x2, y2)`` and in network pixel coordinates, ``x`` along
spatial dim 0 of the ``(1, W, H)`` image (MONAI's column-first layout: ``x`` is the column, ``y`` the row).

:func:`detection_map` matches and scores with MONAI's detection metrics
(:func:`monai.apps.detection.metrics.matching.matching_batch` with :func:`monai.data.box_utils.box_iou`, then
:class:`monai.apps.detection.metrics.coco.COCOMetric`, both ported from nnDetection's COCO evaluation); what
they do, read from MONAI 1.6.1's source and pinned by the tests:

* matching, per image and per class: the detections, in descending score order (at most ``max_detections``
  per image and class), each take the not yet matched ground-truth box with the highest IoU, provided that
  IoU is ``>= threshold``; the IoU is computed in float32 with a machine epsilon added to the union, so an IoU
  that equals a threshold exactly may fall on either side of it;
* an image without ground truth of a class contributes its detections of that class as false positives; an
  image with neither ground truth nor detections contributes nothing;
* AP per class and threshold: the detections of all images sorted by score (stable sort: ties keep the image
  order); precision made non-increasing from the right (the precision envelope); at each of the 101 recall
  points 0.00, 0.01, ..., 1.00 the envelope is read at the first rank whose recall reaches the point, and is 0
  past the final recall; AP is the mean of the 101 values (COCO's 101-point interpolation). MONAI adds
  ``np.spacing(1)`` to the precision's denominator, so a perfect AP reads ``1 - 2e-16`` (returned as is);
* a class without any ground-truth box has no AP: MONAI stores ``-1`` for it and its overall means would
  average that ``-1`` in. This module therefore scores only the classes that have ground truth (remapping
  them to consecutive indices and dropping detections of the other classes, which cannot change the AP of a
  class with ground truth), averages over those classes, and reports ``None`` for the others. Without any
  ground-truth box at all, ``map``/``map50``/``mar`` are ``None`` (``null`` in ``metrics.json``, NaN from
  :class:`DetectionMAP`), nothing is raised.

``map`` is the mean AP over the IoU thresholds 0.40, 0.45, ..., 0.75 (:data:`MGCA_IOU_RANGE`, the MGCA
protocol for RSNA pneumonia detection), ``map50`` the AP at IoU 0.5. :class:`DetectionMAP` is the Ignite
metric for a MONAI evaluator's ``key_val_metric``; :class:`DetectionReport` writes ``eval/metrics.json`` and
overlay PNGs (:func:`overlay_boxes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.distributed import world_info

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.metrics import Metric
    from ignite.metrics.metric import reinit__is_reduced
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced"
    )
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = [
    "DETECTION_METRICS",
    "MGCA_IOU_RANGE",
    "DetectionMAP",
    "detection_map",
    "detection_map_rule",
    "detection_output",
    "iou_thresholds",
]

logger = logging.getLogger(__name__)

MGCA_IOU_RANGE: tuple[float, float, float] = (0.40, 0.75, 0.05)
"""``(start, stop, step)`` of the IoU thresholds averaged by ``map`` (MGCA's RSNA detection protocol)."""

DETECTION_METRICS: tuple[str, ...] = ("map", "map50", "mar")
"""The values :class:`DetectionMAP` can report."""


def iou_thresholds(iou_range: Sequence[float] = MGCA_IOU_RANGE) -> np.ndarray:
    """The IoU thresholds of ``(start, stop, step)``, computed exactly as MONAI's ``COCOMetric`` does.

    ``np.linspace(start, stop, round((stop - start) / step) + 1)``: for :data:`MGCA_IOU_RANGE` the eight values
    0.40, 0.45, ..., 0.75 (bit for bit the floats ``0.4``, ``0.45``, ..., ``0.75``).

    Raises:
        ValueError: not three values, a non-positive step or ``stop < start``.
    """
    if len(iou_range) != 3:
        raise ValueError(f"iou_range must be (start, stop, step), got {tuple(iou_range)}")
    start, stop, step = (float(v) for v in iou_range)
    if step <= 0 or stop < start:
        raise ValueError(f"iou_range needs step > 0 and stop >= start, got {tuple(iou_range)}")
    return np.linspace(start, stop, int(np.round((stop - start) / step)) + 1, endpoint=True)


def _key(threshold: float) -> str:
    return f"{threshold:.2f}"


def _all_thresholds(iou_range: Sequence[float], iou_list: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(range thresholds, all thresholds)``; list values within 1e-9 of a range value take the range value."""
    ranged = iou_thresholds(iou_range)
    extra = [float(t) for t in iou_list if not np.any(np.abs(ranged - float(t)) < 1e-9)]
    if any(not 0.0 <= t <= 1.0 for t in extra):
        raise ValueError(f"IoU thresholds must lie in [0, 1], got {list(iou_list)}")
    everything = np.union1d(ranged, np.asarray(extra, dtype=np.float64))
    keys = [_key(t) for t in everything]
    if len(set(keys)) != len(keys):
        raise ValueError(f"IoU thresholds {everything.tolist()} are not distinct to two decimals")
    return ranged, everything


def detection_map_rule(iou_range: Sequence[float] = MGCA_IOU_RANGE, max_detections: int = 100) -> str:
    """The protocol of :func:`detection_map` in words (``iou_rule`` of ``metrics.json``)."""
    start, stop, step = (float(v) for v in iou_range)
    count = len(iou_thresholds(iou_range))
    return (
        f"map: mAP averaged over IoU {start:.2f}-{stop:.2f} step {step:.2f} ({count} thresholds, MGCA protocol); "
        "map50: AP at IoU 0.50; MONAI matching_batch + COCOMetric (nnDetection's COCO evaluation): per image and "
        "class, detections in descending score order each take the unmatched ground-truth box of highest IoU if "
        f"IoU >= threshold (float32 IoU), at most {int(max_detections)} detections per image and class; "
        "detections on images without ground truth are false positives; AP = COCO-style 101-point interpolation "
        "(mean over recall 0.00..1.00 of the non-increasing precision envelope at the first rank reaching that "
        "recall, 0 beyond the final recall); averaged over the classes that have ground truth; null without any "
        "ground-truth box"
    )


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    if value is None:
        return np.zeros(0, dtype=dtype)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _boxes(value: Any) -> np.ndarray:
    boxes = _numpy(value, np.float32)
    if boxes.size == 0:
        return np.zeros((0, boxes.shape[-1] if boxes.ndim == 2 else 4), dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"boxes must be an (N, 4) array in StandardMode (x1, y1, x2, y2), got shape {boxes.shape}")
    return boxes


def _record(item: Mapping[str, Any], with_score: bool) -> dict[str, np.ndarray]:
    """``{"box": (N, 4) float32, "label": (N,) int64[, "score": (N,) float32]}`` from tensors or arrays."""
    missing = [k for k in (("box", "label", "score") if with_score else ("box", "label")) if k not in item]
    if missing:
        raise KeyError(f"a detection record needs {missing} (has {sorted(item)})")
    record = {"box": _boxes(item["box"]), "label": _numpy(item["label"], np.int64).reshape(-1)}
    if with_score:
        record["score"] = _numpy(item["score"], np.float32).reshape(-1)
    sizes = {k: len(v) for k, v in record.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"box/label/score counts differ: {sizes}")
    return record


def _check_labels(records: Sequence[Mapping[str, np.ndarray]], num_classes: int, what: str) -> None:
    for record in records:
        labels = record["label"]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{what} class indices must lie in [0, {num_classes}), got {sorted(set(labels.tolist()))}")


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _array_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """MONAI's ``box_iou`` on arrays, as ``matching_batch`` calls it (an array in, an array out)."""
    return np.asarray(box_iou(boxes1, boxes2))


def detection_map(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    num_classes: int = 1,
    iou_range: Sequence[float] = MGCA_IOU_RANGE,
    iou_list: Sequence[float] = (0.5,),
    max_detections: int = 100,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """COCO-style mAP of box detections with MONAI's ``matching_batch`` and ``COCOMetric``.

    See the module docstring for the matching and interpolation rules, the scoring of images without ground
    truth (their detections are false positives) and of classes without ground truth (left out, ``None``).

    Args:
        predictions: one mapping per image with ``box`` ``(N, 4)``, ``label`` ``(N,)`` class indices and
            ``score`` ``(N,)`` (tensors or arrays; ``N`` may be 0).
        targets: one mapping per image with ``box`` ``(M, 4)`` and ``label`` ``(M,)``, in the same image order.
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        iou_range: ``(start, stop, step)`` of the thresholds averaged by ``map``.
        iou_list: further thresholds reported in ``ap_by_iou`` (0.5 is always included, for ``map50``).
        max_detections: detections kept per image and class (highest scores first).
        class_names: names of the classes (keys of ``ap_by_class``); default ``"0"``, ``"1"``, ...

    Returns:
        ``map`` (mean AP over the ``iou_range`` thresholds), ``map50`` (AP at IoU 0.5), ``mar`` (MONAI's mean
        recall at ``max_detections`` over all evaluated thresholds: the range and ``iou_list``), ``ap_by_iou`` (``"0.40"`` → AP, for
        the range and ``iou_list`` thresholds), ``ap_by_class`` (name → mean AP over the range, ``None`` for
        a class without ground truth), ``iou_thresholds`` (the range thresholds), ``images``, ``positives``
        (images with a ground-truth box), ``gt_boxes``, ``pred_boxes``, ``num_classes``, ``max_detections``.
        The AP values are ``None`` when no image has a ground-truth box.

    Raises:
        ValueError: different numbers of predictions and targets, malformed boxes, out-of-range labels or
            invalid thresholds.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    names = [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    preds = [_record(p, with_score=True) for p in predictions]
    gts = [_record(t, with_score=False) for t in targets]
    _check_labels(preds, num_classes, "predicted")
    _check_labels(gts, num_classes, "ground-truth")
    ranged, everything = _all_thresholds(iou_range, [0.5, *iou_list])
    result: dict[str, Any] = {
        "map": None,
        "map50": None,
        "mar": None,
        "ap_by_iou": {_key(t): None for t in everything},
        "ap_by_class": dict.fromkeys(names),
        "iou_thresholds": [round(float(t), 6) for t in ranged],
        "images": len(gts),
        "positives": sum(int(g["label"].size > 0) for g in gts),
        "gt_boxes": sum(int(g["label"].size) for g in gts),
        "pred_boxes": sum(int(p["label"].size) for p in preds),
        "num_classes": num_classes,
        "max_detections": int(max_detections),
    }
    present = sorted({int(c) for g in gts for c in g["label"].tolist()})
    if not present:
        return result
    # classes without ground truth would enter MONAI's means as -1: score the present ones only, re-indexed
    remap = np.full(num_classes, -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    kept = [remap[p["label"]] >= 0 for p in preds]
    coco_names = [f"class{k}" for k in range(len(present))]
    start, stop, step = (float(v) for v in iou_range)
    metric = COCOMetric(
        classes=coco_names,
        iou_list=everything.tolist(),
        iou_range=(start, stop, step),
        max_detection=(int(max_detections),),
        per_class=True,
        verbose=False,
    )
    if not np.array_equal(metric.iou_thresholds, everything):
        raise RuntimeError(f"MONAI's IoU thresholds {metric.iou_thresholds.tolist()} differ from {everything.tolist()}")
    matched = matching_batch(
        iou_fn=_array_iou,
        iou_thresholds=metric.iou_thresholds.tolist(),
        pred_boxes=[p["box"][k] for p, k in zip(preds, kept, strict=True)],
        pred_classes=[remap[p["label"][k]] for p, k in zip(preds, kept, strict=True)],
        pred_scores=[p["score"][k] for p, k in zip(preds, kept, strict=True)],
        gt_boxes=[g["box"] for g in gts],
        gt_classes=[remap[g["label"]] for g in gts],
        max_detections=int(max_detections),
    )
    values, _ = metric(matched)
    last = int(max_detections)
    ap = {_key(t): [float(values[f"{name}_AP_IoU_{t:.2f}_MaxDet_{last}"]) for name in coco_names] for t in everything}
    ranged_keys = [_key(t) for t in ranged]
    result["ap_by_iou"] = {key: _mean(per_class) for key, per_class in ap.items()}
    for k, cls in enumerate(present):
        result["ap_by_class"][names[cls]] = float(np.mean([ap[key][k] for key in ranged_keys]))
    result["map"] = float(np.mean([result["ap_by_iou"][key] for key in ranged_keys]))
    result["map50"] = result["ap_by_iou"][_key(0.5)]
    mar = float(values[f"mAR_IoU_{start:.2f}_{stop:.2f}_{step:.2f}_MaxDet_{last}"])
    result["mar"] = mar if mar >= 0 else None
    return result


def _batch_length(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1:
        return int(value.shape[0])
    return None


def _per_image(output: Any, pred_box_key: str) -> list[Mapping[str, Any]]:
    """A list of per-image mappings from a decollated list, one image's mapping, or a mapping of batch lists."""
    if isinstance(output, Mapping):
        boxes = output.get(pred_box_key)
        if isinstance(boxes, (torch.Tensor, np.ndarray)) and boxes.ndim == 2:
            return [output]
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"cannot split the engine output into images: {pred_box_key!r} is {type(boxes).__name__}")
        n = len(boxes)
        batched = {key: value for key, value in output.items() if _batch_length(value) == n}
        return [{key: value[k] for key, value in batched.items()} for k in range(n)]
    if isinstance(output, (list, tuple)) and all(isinstance(item, Mapping) for item in output):
        return list(output)
    raise TypeError(f"expected a list of per-image dicts as the engine output, got {type(output).__name__}")


def detection_output(
    output: Any,
    pred_box_key: str = "pred_box",
    pred_label_key: str = "pred_label",
    pred_score_key: str = "pred_score",
    box_key: str = "box",
    label_key: str = "label",
    image_key: str | None = "image",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """``engine.state.output`` → ``(predictions, targets, images)`` for :func:`detection_map`.

    Args:
        output: the evaluator's output: a list of per-image dicts, one image's dict, or a dict of per-image
            lists (split here: MONAI's ``decollate_batch`` would split each image's ``(N, 4)`` boxes into rows,
            and it fails on an empty ``(0, 4)`` tensor, so a detection evaluator runs with ``decollate=False``
            and gives the per-image list itself).
        pred_box_key: key of the predicted boxes ``(N, 4)``.
        pred_label_key: key of the predicted class indices ``(N,)``.
        pred_score_key: key of the predicted scores ``(N,)``.
        box_key: key of the ground-truth boxes ``(M, 4)``.
        label_key: key of the ground-truth class indices ``(M,)``.
        image_key: key of the ``(1, W, H)`` image (``None``: the images are returned as ``None``).

    Returns:
        ``predictions`` (``box``/``label``/``score`` dicts), ``targets`` (``box``/``label`` dicts) and the images.

    Raises:
        KeyError: a per-image dict lacks a key (the message lists key names only).
    """
    items = _per_image(output, pred_box_key)
    wanted = (pred_box_key, pred_label_key, pred_score_key, box_key, label_key)
    for item in items:
        missing = [key for key in wanted if key not in item]
        if missing:
            raise KeyError(f"the engine output lacks {missing} (has {sorted(map(str, item))})")
    predictions = [{"box": i[pred_box_key], "label": i[pred_label_key], "score": i[pred_score_key]} for i in items]
    targets = [{"box": i[box_key], "label": i[label_key]} for i in items]
    images = [i.get(image_key) if image_key is not None else None for i in items]
    return predictions, targets, images


def _metric_output(output: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    predictions, targets, _ = detection_output(output, image_key=None)
    return predictions, targets


def _gather(items: list[Any]) -> list[Any]:
    """All ranks' items, rank by rank (the local list without a process group)."""
    if world_info()[1] > 1:
        return [item for part in idist.all_gather(list(items)) for item in part]
    return list(items)


class DetectionMAP(Metric):
    """Ignite metric: :func:`detection_map`'s ``map`` (IoU 0.40-0.75), ``map50`` or ``mar`` over an epoch.

    Works as a MONAI evaluator's ``key_val_metric`` (``Metric.attach(engine, name)``). Each iteration the
    ``output_transform`` gives ``(predictions, targets)``: lists of per-image ``box``/``label``/``score`` and
    ``box``/``label`` mappings; by default from the evaluator's list of per-image dicts with ``pred_box``,
    ``pred_label``, ``pred_score``, ``box`` and ``label`` (:func:`detection_output`). They are kept on the CPU
    as arrays; :meth:`compute` gathers them from all ranks (``ignite.distributed.all_gather`` of Python
    objects) and scores the whole split. The value is NaN without any ground-truth box (or image).

    Args:
        num_classes: number of classes.
        metric: ``"map"``, ``"map50"`` or ``"mar"`` (see :func:`detection_map`).
        iou_range: ``(start, stop, step)`` of the ``map`` thresholds.
        iou_list: further thresholds (they change ``mar`` only).
        max_detections: detections kept per image and class.
        output_transform: ``engine.state.output`` → ``(predictions, targets)``.
        device: Ignite's metric device (the state lives on the CPU whatever it is).

    Raises:
        ValueError: an unknown ``metric`` or invalid thresholds.
    """

    def __init__(
        self,
        num_classes: int = 1,
        metric: str = "map",
        iou_range: Sequence[float] = MGCA_IOU_RANGE,
        iou_list: Sequence[float] = (0.5,),
        max_detections: int = 100,
        output_transform: Callable[[Any], Any] = _metric_output,
        device: str | torch.device = "cpu",
    ) -> None:
        if metric not in DETECTION_METRICS:
            raise ValueError(f"metric must be one of {DETECTION_METRICS}, got {metric!r}")
        _all_thresholds(iou_range, [0.5, *iou_list])
        self.num_classes = int(num_classes)
        self.metric = metric
        self.iou_range = tuple(float(v) for v in iou_range)
        self.iou_list = tuple(float(v) for v in iou_list)
        self.max_detections = int(max_detections)
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        """Forget the collected images."""
        self._predictions: list[dict[str, np.ndarray]] = []
        self._targets: list[dict[str, np.ndarray]] = []

    @reinit__is_reduced
    def update(self, output: tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]) -> None:
        """Keep one iteration's ``(predictions, targets)``.

        Raises:
            ValueError: different numbers of predictions and targets.
        """
        predictions, targets = output
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        self._predictions.extend(_record(p, with_score=True) for p in predictions)
        self._targets.extend(_record(t, with_score=False) for t in targets)

    def compute(self) -> float:
        """The selected value over all ranks' images (NaN when undefined)."""
        predictions, targets = _gather(self._predictions), _gather(self._targets)
        value = detection_map(
            predictions, targets, self.num_classes, self.iou_range, self.iou_list, self.max_detections
        )[self.metric]
        return float("nan") if value is None else float(value)
