"""The per-image prediction files of the downstream bundles' inference: what one file holds.

One definition for the two writers of these files: the bundles' own ``inference.json`` handlers
(:class:`~sista_monai.handlers.ClassificationJSONWriter`, :class:`~sista_monai.handlers.DetectionJSONWriter`) and the
MONAI Deploy applications' result operators (:mod:`sista_monai.deploy.operators`, which add the instance's UIDs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["classification_record", "detection_record", "image_size"]


def image_size(image: Any) -> tuple[int, int] | None:
    """``(width, height)`` of a loaded image as in its file (a MetaTensor's ``spatial_shape``), ``None`` if unknown."""
    meta = getattr(image, "meta", None)
    shape = meta.get("spatial_shape") if isinstance(meta, Mapping) else None
    if shape is None:
        return None
    width, height = (int(v) for v in np.asarray(shape).reshape(-1)[:2])
    return width, height


def classification_record(
    probability: torch.Tensor | Sequence[float] | float,
    source: str | None,
    threshold: float,
    class_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``{"image": <file name>, "probability": p, "prediction": 0|1, "threshold": t, "label": <class name>}`` for a
    one-output network (``label`` only with ``class_names``), ``{"image", "probabilities": [...]}`` for several.

    Args:
        probability: the network's probability (or probabilities) for one image.
        source: the input file (its name is recorded), or ``None``.
        threshold: a probability ``>= threshold`` is a positive prediction.
        class_names: names of the negative and positive class, e.g. ``{"0": "no opacity", "1": "Lung Opacity"}``.
    """
    values = [float(v) for v in torch.as_tensor(probability, dtype=torch.float32).reshape(-1).tolist()]
    record: dict[str, Any] = {"image": Path(source).name if source else None}
    if len(values) == 1:
        prediction = int(values[0] >= threshold)
        record.update({"probability": values[0], "prediction": prediction, "threshold": float(threshold)})
        if class_names:
            record["label"] = class_names.get(str(prediction))
    else:
        record["probabilities"] = values
    return record


def detection_record(
    boxes: Any,
    scores: Any,
    labels: Any,
    source: str | None,
    size: tuple[int, int] | None,
    class_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``{"image", "width", "height", "box_mode": "xyxy", "boxes", "boxes_xywh", "scores", "labels", "label_names"}``:
    the detections of one image in its file's pixel coordinates (x: column, y: row), by decreasing score.

    Args:
        boxes: ``(N, 4)`` boxes ``[x1, y1, x2, y2]``.
        scores: ``(N,)`` scores.
        labels: ``(N,)`` class indices.
        source: the input file (its name is recorded), or ``None``.
        size: ``(width, height)`` of the image (:func:`image_size`), or ``None``.
        class_names: ``{"0": "Lung Opacity"}``; ``label_names`` only with it.
    """
    box_tensor = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    score_tensor = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    label_tensor = torch.as_tensor(labels).reshape(-1).long()
    order = torch.argsort(score_tensor, descending=True)
    box_tensor, score_tensor, label_tensor = box_tensor[order], score_tensor[order], label_tensor[order]
    width, height = size if size is not None else (None, None)
    xywh = torch.cat([box_tensor[:, :2], box_tensor[:, 2:] - box_tensor[:, :2]], dim=1)
    record: dict[str, Any] = {
        "image": Path(source).name if source else None,
        "width": width,
        "height": height,
        "box_mode": "xyxy",
        "boxes": [[round(float(v), 2) for v in box] for box in box_tensor.tolist()],
        "boxes_xywh": [[round(float(v), 2) for v in box] for box in xywh.tolist()],
        "scores": [round(float(v), 5) for v in score_tensor.tolist()],
        "labels": [int(v) for v in label_tensor.tolist()],
    }
    if class_names:
        record["label_names"] = [class_names.get(str(int(v))) for v in label_tensor.tolist()]
    return record
