"""Geometry and intensity preprocessing for chest radiographs, assembled from stock MONAI transforms.

The chain is split at the point where randomness starts, so that the deterministic part (decode, VOI,
resize, pad) can be cached by a :class:`monai.data.PersistentDataset` or :class:`monai.data.CacheDataset`
and only the cheap random part runs every epoch:

* deterministic: :class:`~sista_monai.transforms.LoadChestXrayd` → ``Resized`` (longest side to
  ``image_size``, aspect kept, area interpolation) → ``SpatialPadd`` (to a square, zeros, centred) →
  ``NormalizeIntensityd`` (fixed ``mean``/``std``, recorded in the encoder's sidecar so inference matches);
* random (training): ``RandSpatialCropd`` to ``crop_size``; evaluation: ``CenterSpatialCropd``.

Bundle configs may spell the same MONAI transforms out in JSON; these helpers are for Python users, tests
and benchmarks.
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

__all__ = ["deterministic_transforms", "random_transforms", "chest_xray_transforms"]


def deterministic_transforms(
    keys: KeysCollection = "image",
    image_size: int = 256,
    mean: float | None = 0.5,
    std: float | None = 0.25,
    load: bool = True,
    **loader_kwargs: Any,
) -> list[Transform]:
    """Load (optional), resize the longest side to ``image_size`` keeping aspect, pad to a square, normalise.

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
    chain += [
        Resized(keys, spatial_size=image_size, size_mode="longest", mode="area"),
        SpatialPadd(keys, spatial_size=(image_size, image_size), method="symmetric", value=0.0),
    ]
    if mean is not None:
        chain.append(NormalizeIntensityd(keys, subtrahend=mean, divisor=std if std else 1.0))
    return chain


def random_transforms(
    keys: KeysCollection = "image", crop_size: int | None = 224, train: bool = True
) -> list[Transform]:
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
        + random_transforms(keys, crop_size, train)
        + list(extra)
    )
