"""Geometry and intensity preprocessing for chest radiographs, assembled from stock MONAI transforms.

The one definition of the chain every bundle runs (their configs call these functions, so training,
evaluation, inference and the packaged bundles cannot drift apart). It is split at the point where
randomness starts, so that the deterministic part (decode, VOI, resize, pad) can be cached by a
:class:`monai.data.PersistentDataset` or :class:`monai.data.CacheDataset` and only the cheap random part
runs every epoch:

* :func:`resize_pad_normalize`: ``Resized`` (longest side to ``image_size``, aspect kept, area
  interpolation) → ``SpatialPadd`` (to a square, zeros, centred) → ``NormalizeIntensityd`` (fixed
  ``mean``/``std``, recorded in the encoder's sidecar so inference matches);
* :func:`deterministic_transforms`: :class:`~sista_monai.transforms.LoadChestXrayd` followed by it;
* :func:`crop_transforms`: ``RandSpatialCropd`` to ``crop_size`` for training, ``CenterSpatialCropd`` for
  evaluation and inference.

The functions return lists of plain MONAI transforms (not a nested ``Compose``, which MONAI's caching
datasets would take for a random transform and stop caching at), so a config joins them with its own steps:
``"$@loading + sista_monai.transforms.resize_pad_normalize('image', @resize_size, @intensity_mean, @intensity_std)"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    NormalizeIntensityd,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
    Transform,
)

from .io import LoadChestXrayd

__all__ = ["resize_pad_normalize", "deterministic_transforms", "crop_transforms", "chest_xray_transforms"]


def resize_pad_normalize(
    keys: KeysCollection = "image",
    image_size: int = 256,
    mean: float | None = 0.5,
    std: float | None = 0.25,
    mode: str | Sequence[str] = "area",
    intensity_keys: KeysCollection = "image",
    pad_size: int | None = None,
) -> list[Transform]:
    """Resize the longest side to ``image_size`` keeping aspect, pad to a square, normalise the intensities.

    Args:
        keys: the keys resized and padded (an image and the masks drawn on it).
        image_size: the longest side after resizing.
        mean: subtracted after resizing; ``None`` skips normalisation (values stay in ``[0, 1]``).
        std: divisor after subtracting ``mean``.
        mode: ``Resized`` interpolation, one for all keys or one per key (``"nearest"`` for label masks).
        intensity_keys: the keys normalised (the image, not its masks).
        pad_size: side of the padded square; ``image_size`` when ``None``.

    Returns:
        A list of MONAI dictionary transforms.
    """
    side = image_size if pad_size is None else pad_size
    chain: list[Transform] = [
        Resized(keys, spatial_size=image_size, size_mode="longest", mode=mode),
        SpatialPadd(keys, spatial_size=(side, side), method="symmetric", value=0.0),
    ]
    if mean is not None:
        divisor = std if std else 1.0  # MONAI annotates arrays only; its docs and code take a float as well
        chain.append(NormalizeIntensityd(intensity_keys, subtrahend=mean, divisor=divisor))  # type: ignore[arg-type]
    return chain


def deterministic_transforms(
    keys: KeysCollection = "image",
    image_size: int = 256,
    mean: float | None = 0.5,
    std: float | None = 0.25,
    load: bool = True,
    **loader_kwargs: Any,
) -> list[Transform]:
    """Load (optional), then :func:`resize_pad_normalize`.

    Args:
        keys: image keys.
        image_size: side of the square output.
        mean: subtracted after resizing; ``None`` skips normalisation (values stay in ``[0, 1]``).
        std: divisor after subtracting ``mean``.
        load: prepend :class:`~sista_monai.transforms.LoadChestXrayd`.
        loader_kwargs: :class:`~sista_monai.transforms.LoadChestXray` arguments (``voi``, ...).

    Returns:
        A list of MONAI dictionary transforms.
    """
    chain: list[Transform] = [LoadChestXrayd(keys, **loader_kwargs)] if load else []
    return chain + resize_pad_normalize(keys, image_size, mean, std, intensity_keys=keys)


def crop_transforms(keys: KeysCollection = "image", crop_size: int | None = 224, train: bool = True) -> list[Transform]:
    """Random crop for training, centre crop for evaluation; nothing when ``crop_size`` is ``None``."""
    if crop_size is None:
        return []
    roi = (crop_size, crop_size)
    if train:
        return [RandSpatialCropd(keys, roi_size=roi, random_size=False)]
    return [CenterSpatialCropd(keys, roi_size=roi)]


def chest_xray_transforms(
    keys: KeysCollection = "image",
    image_size: int = 256,
    crop_size: int | None = 224,
    train: bool = False,
    mean: float | None = 0.5,
    std: float | None = 0.25,
    extra: Sequence[Transform] = (),
    **loader_kwargs: Any,
) -> Compose:
    """The full chain (deterministic + random + ``extra``) as one :class:`~monai.transforms.Compose`."""
    return Compose(
        deterministic_transforms(keys, image_size, mean, std, **loader_kwargs)
        + crop_transforms(keys, crop_size, train)
        + list(extra)
    )
