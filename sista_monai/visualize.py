"""Drawing: heat maps on radiographs, segmentation and box overlays, the ROC curve (PNG, no display needed)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sista_monai.io.files import atomic_write_bytes
from sista_monai.metrics.detection import _boxes, _numpy

__all__ = ["GT_COLOUR", "PRED_COLOUR", "overlay_heatmap", "overlay_image", "overlay_boxes", "plot_roc_curve"]


def overlay_heatmap(image: np.ndarray, weights: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a ``[0, 1]`` grayscale ``(rows, cols)`` image with a red–yellow map of ``weights`` (same shape).

    Returns:
        ``(rows, cols, 3)`` uint8 RGB.
    """
    gray = np.clip(image, 0.0, 1.0)
    heat = weights / weights.max() if weights.max() > 0 else weights
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1)
    base = np.repeat(gray[..., None], 3, axis=-1)
    mix = (1 - alpha * heat[..., None]) * base + alpha * heat[..., None] * colour
    return (np.clip(mix, 0, 1) * 255).astype(np.uint8)


def overlay_image(
    image: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    prediction: torch.Tensor | np.ndarray,
    mean: float = 0.5,
    std: float = 0.25,
) -> Image.Image:
    """Three panels side by side: the image, the ground truth (green) and the prediction (red) on it.

    Args:
        image: ``(1, W, H)`` or ``(W, H)`` normalised image (MONAI's column-first layout).
        target: binary mask of the same spatial shape.
        prediction: binary mask of the same spatial shape.
        mean: intensity normalisation mean (undone for display).
        std: intensity normalisation std.
    """

    def plane(value: torch.Tensor | np.ndarray) -> np.ndarray:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
        return np.squeeze(array).T  # (W, H) → (rows, cols)

    grey = np.clip(plane(image) * std + mean, 0.0, 1.0)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    panels = [rgb.copy()]
    for mask, colour in ((plane(target) > 0.5, (0, 255, 0)), (plane(prediction) > 0.5, (255, 0, 0))):
        panel = rgb.copy().astype(np.float32)
        panel[mask] = 0.5 * panel[mask] + 0.5 * np.asarray(colour, dtype=np.float32)
        panels.append(panel.astype(np.uint8))
    return Image.fromarray(np.concatenate(panels, axis=1))


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


GT_COLOUR = (0, 255, 0)


PRED_COLOUR = (255, 0, 0)


def _pixel(value: float, size: int) -> int:
    return int(min(max(math.floor(float(value) + 0.5), 0), size - 1))


def _rectangle(
    draw: ImageDraw.ImageDraw, box: np.ndarray, size: tuple[int, int], colour: tuple[int, int, int], width: int
) -> tuple[int, int, int, int]:
    """Outline the pixels a box covers: columns ``round(x1) .. round(x2) - 1``, rows ``round(y1) .. round(y2) - 1``."""
    cols, rows = size
    x0, y0 = _pixel(box[0], cols), _pixel(box[1], rows)
    x1, y1 = max(_pixel(float(box[2]) - 1, cols), x0), max(_pixel(float(box[3]) - 1, rows), y0)
    draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
    return x0, y0, x1, y1


def overlay_boxes(
    image: torch.Tensor | np.ndarray,
    gt_boxes: torch.Tensor | np.ndarray | None,
    pred_boxes: torch.Tensor | np.ndarray | None,
    pred_scores: torch.Tensor | np.ndarray | None = None,
    mean: float = 0.5,
    std: float = 0.25,
    score_threshold: float | None = None,
    line_width: int | None = None,
) -> Image.Image:
    """The image with the ground-truth boxes in green and the predicted boxes in red (RGB, ``rows x cols``).

    The normalisation is undone (``v * std + mean``, clipped to [0, 1]) and the ``(W, H)`` plane transposed to
    ``(rows, cols)`` as :func:`~sista_monai.visualize.overlay_image` does, so a box's ``x`` is a
    column and its ``y`` a row. A box is outlined on the outermost pixels it covers: columns ``round(x1)`` to
    ``round(x2) - 1`` and rows ``round(y1)`` to ``round(y2) - 1`` (``x2``/``y2`` exclusive, clipped to the
    image), ``line_width`` pixels thick inwards. Predictions are drawn over the ground truth, lowest score
    first; with ``pred_scores`` each score is written (red) above its box, or inside it at the top edge.

    Args:
        image: ``(1, W, H)`` or ``(W, H)`` normalised image.
        gt_boxes: ``(M, 4)`` ground-truth boxes (``None`` or empty: none).
        pred_boxes: ``(N, 4)`` predicted boxes.
        pred_scores: ``(N,)`` scores (written next to the boxes, and used by ``score_threshold``).
        mean: intensity normalisation mean.
        std: intensity normalisation std.
        score_threshold: predictions scoring below it are not drawn (needs ``pred_scores``).
        line_width: outline width in pixels (default: 1 per 256 pixels of the shorter side, at least 1).

    Raises:
        ValueError: an image that is not 2-D after dropping a channel axis, or scores that do not match boxes.
    """
    plane = np.squeeze(_numpy(image, np.float32))
    if plane.ndim == 3:
        plane = plane[0]
    if plane.ndim != 2:
        raise ValueError(f"expected a (1, W, H) or (W, H) image, got shape {tuple(np.shape(image))}")
    grey = np.clip(plane.T * float(std) + float(mean), 0.0, 1.0)  # (W, H) → (rows, cols)
    canvas = Image.fromarray(np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2))
    size = canvas.size  # (cols, rows)
    width = int(line_width) if line_width else max(1, round(min(size) / 256))
    draw = ImageDraw.Draw(canvas)
    for box in _boxes(gt_boxes):
        _rectangle(draw, box, size, GT_COLOUR, width)
    boxes = _boxes(pred_boxes)
    scores = None if pred_scores is None else _numpy(pred_scores, np.float32).reshape(-1)
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(f"{len(scores)} scores for {len(boxes)} predicted boxes")
    if score_threshold is not None and scores is None:
        raise ValueError("score_threshold needs pred_scores")
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    font = ImageFont.load_default(size=max(10, min(size) // 40)) if scores is not None else None
    for index in order:
        if scores is not None and score_threshold is not None and scores[index] < float(score_threshold):
            continue
        x0, y0, _, _ = _rectangle(draw, boxes[index], size, PRED_COLOUR, width)
        if scores is not None:
            text = f"{float(scores[index]):.2f}"
            _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
            height = bottom - top + 1
            y = y0 - height - 1 if y0 >= height + 1 else y0 + width
            draw.text((x0 + width, y - top), text, fill=PRED_COLOUR, font=font)
    return canvas
