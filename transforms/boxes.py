"""Boxes through the image geometry: from original pixels to the transformed image's pixels and back.

Boxes are MONAI's StandardMode ``(x1, y1, x2, y2)`` in the ``(W, H)`` layout of the loaded image (spatial
dimension 0 is the DICOM column, x). :class:`BoxesToImagePixelsd` carries them through the resize, pad and crop
by the image's affine (MONAI's ``apply_affine_to_boxes``), and :class:`BoxesToOriginalPixelsd` maps
predictions back to the original pixels for the outputs.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import apply_affine_to_boxes
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.box_utils import clip_boxes_to_image
from monai.transforms import MapTransform

__all__ = [
    "map_boxes",
    "BoxesToImagePixelsd",
    "BoxesToOriginalPixelsd",
]


def _affine_2d(affine: Any) -> torch.Tensor:
    """The 3x3 affine of a 2-D image (MONAI's MetaTensor carries a 4x4 one for 2-D images)."""
    matrix = torch.as_tensor(np.asarray(affine), dtype=torch.float64)
    if matrix.shape == (3, 3):
        return matrix
    if matrix.shape == (4, 4):
        return matrix[[0, 1, 3]][:, [0, 1, 3]]
    raise ValueError(f"expected a 3x3 or 4x4 affine, got shape {tuple(matrix.shape)}")


def map_boxes(boxes: Any, matrix: torch.Tensor) -> torch.Tensor:
    """Map ``(N, 4)`` StandardMode boxes through a 3x3 index-to-index affine, exactly at the pixel edges.

    MONAI's affines map pixel *centres* (index ``k`` is the centre of pixel ``k``) while box coordinates are
    pixel *edges* (pixel ``k`` spans ``[k, k + 1]``); the edges are shifted by half a pixel into centre
    coordinates, mapped with MONAI's :func:`apply_affine_to_boxes` and shifted back, so that a resize by ``s``
    maps the edge ``x`` to ``s * x`` and not to ``s * x + (s - 1) / 2``.
    """
    boxes_t = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, torch.Tensor) else boxes, dtype=torch.float64)
    boxes_t = boxes_t.reshape(-1, 4)
    if boxes_t.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    mapped = apply_affine_to_boxes(boxes_t - 0.5, matrix.to(torch.float64)) + 0.5
    return mapped.to(torch.float32)


class _BoxGridTransform(MapTransform):
    """Shared part of :class:`BoxesToImagePixelsd` and :class:`BoxesToOriginalPixelsd`."""

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def _affines(self, d: Mapping[Hashable, Any]) -> tuple[torch.Tensor, torch.Tensor, MetaTensor]:
        image = d[self.image_key]
        if not isinstance(image, MetaTensor):
            raise TypeError(f"{self.image_key!r} must be a MetaTensor carrying its affines, got {type(image).__name__}")
        if "original_affine" not in image.meta:
            raise ValueError(f"{self.image_key!r} has no 'original_affine' metadata: load it with LoadChestXrayd")
        return _affine_2d(image.meta["original_affine"]), _affine_2d(image.affine), image


class BoxesToImagePixelsd(_BoxGridTransform):
    """Map boxes to the pixels of the image as transformed so far, through the image's affine.

    Place it after image-only spatial transforms (resize, pad, crop): the image's affine has followed them, and
    the boxes are mapped through ``inv(affine) @ source`` (:func:`map_boxes`, exact at pixel edges), where
    ``source`` is the grid the boxes are given in:

    * ``"loaded"``: the loaded image's pixels (its ``original_affine``, as ``LoadChestXrayd`` records it);
    * ``"plain"``: the pixels of the plain tensor the spatial transforms started from. MONAI's
      ``PersistentDataset`` returns cached items as plain tensors (their metadata is not cached), and a crop of
      a plain tensor starts from the identity affine: the bundles map the boxes to the padded image's pixels
      before the cache (``"loaded"``), drop the metadata there, and map them through the random or centre crop
      after it (``"plain"``).

    MONAI's ``AffineBoxToWorldCoordinated``/``AffineBoxToImageCoordinated`` would be the stock pair, but they
    apply the 4x4 affine of a 2-D MetaTensor to 2-D boxes as-is (a shape error) and map box edges as pixel
    centres (half a pixel off after a resize), hence this transform.

    Args:
        keys: the box keys (``(N, 4)`` StandardMode, in the ``source`` grid's pixels).
        image_key: the transformed image.
        source: ``"loaded"`` or ``"plain"``.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: an unknown ``source``.
    """

    SOURCES = ("loaded", "plain")

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", source: str = "loaded", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, image_key, allow_missing_keys)
        if source not in self.SOURCES:
            raise ValueError(f"source must be one of {self.SOURCES}, got {source!r}")
        self.source = source

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.source == "loaded":
            reference, current, _ = self._affines(d)
        else:
            image = d[self.image_key]
            if not isinstance(image, MetaTensor):
                raise TypeError(
                    f"{self.image_key!r} must be a MetaTensor after a spatial transform, got {type(image).__name__}"
                )
            current = _affine_2d(image.affine)
            reference = torch.eye(3, dtype=torch.float64)
        matrix = torch.linalg.inv(current) @ reference
        for key in self.key_iterator(d):
            d[key] = map_boxes(d[key], matrix)
        return d


class BoxesToOriginalPixelsd(_BoxGridTransform):
    """Map boxes from the preprocessed image's pixels back to the loaded image's pixels (inference).

    The inverse of :class:`BoxesToImagePixelsd`: ``inv(original_affine) @ affine``, then clipped to the
    original ``spatial_shape`` (``clip``).

    Args:
        keys: the box keys (``(N, 4)`` StandardMode, in the preprocessed image's pixels).
        image_key: the preprocessed image.
        clip: clip the boxes to the original image.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", clip: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, image_key, allow_missing_keys)
        self.clip = clip

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        original, current, image = self._affines(d)
        matrix = torch.linalg.inv(original) @ current
        shape = image.meta.get("spatial_shape")
        for key in self.key_iterator(d):
            mapped: torch.Tensor | np.ndarray = map_boxes(d[key], matrix)
            if self.clip and shape is not None and mapped.shape[0]:
                size = [int(s) for s in np.asarray(shape).reshape(-1)[:2]]
                mapped, _ = clip_boxes_to_image(mapped, size, remove_empty=False)
            d[key] = mapped
        return d
