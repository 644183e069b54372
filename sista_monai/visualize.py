"""Small drawing helpers shared by the heat-map handler, inference and the downstream plots."""

from __future__ import annotations

import numpy as np

__all__ = ["overlay_heatmap"]


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
