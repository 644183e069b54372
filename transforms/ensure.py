"""From an in-memory X-ray array (MONAI Deploy's ``(W, H, 1)``) to the image the loader would have produced.

A bundle's ``inference.json`` preprocessing starts with a load transform for files. MONAI Deploy's bundle
inference operator removes every transform whose class name contains ``LoadImage`` or ``SaveImage`` and
hands the rest an in-memory image instead: for a single-frame DICOM series, ``DICOMSeriesToVolumeOperator``
gives the stored pixel values (modality LUT applied) as a ``(W, H, 1)`` array (MONAI's column-first layout,
a depth of one), with none of the VOI windowing or polarity handling of
:class:`~sista_monai.transforms.LoadChestXray`. :class:`EnsureChestXrayd`, placed right after the load
transform, makes both paths meet:

* an image loaded by :class:`~sista_monai.transforms.ChestXrayReader` (its metadata records ``voi_source``)
  passes through unchanged;
* any other array (``(W, H, 1)``, ``(W, H)`` or ``(1, W, H)``) is treated as modality-LUT pixel values and
  goes through the same DICOM VOI and polarity steps the loader applies
  (:func:`sista_monai.transforms.dicom_to_display`), giving the ``(1, W, H)`` float32 image in ``[0, 1]``
  that the loader gives for the same file.

Window and photometric tags are taken from the array's metadata when present (keys ``WindowCenter``,
``WindowWidth``, ``VOILUTFunction``, ``PhotometricInterpretation``, ``PresentationLUTShape``, or their
snake-case forms), else from the transform's arguments; without window tags the percentile window of
``voi="auto"`` applies, as for a file without them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_numpy

from .display import dicom_to_display

__all__ = ["EnsureChestXray", "EnsureChestXrayd", "EnsureChestXrayD", "EnsureChestXrayDict"]

_META_ALIASES = {
    "WindowCenter": ("WindowCenter", "window_center"),
    "WindowWidth": ("WindowWidth", "window_width"),
    "VOILUTFunction": ("VOILUTFunction", "voi_lut_function"),
    "PhotometricInterpretation": ("PhotometricInterpretation", "photometric_interpretation"),
    "PresentationLUTShape": ("PresentationLUTShape", "presentation_lut_shape"),
}


def _meta_value(meta: Mapping[str, Any], keyword: str) -> Any:
    for alias in _META_ALIASES[keyword]:
        value = meta.get(alias)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


class EnsureChestXray(Transform):
    """Turn an in-memory radiograph array into the ``(1, W, H)`` display-normalised image; pass loaded ones.

    Args:
        voi: VOI mode for raw arrays (see :data:`sista_monai.transforms.display.VOI_MODES`); ``"auto"`` uses window
            tags from the metadata or the arguments, else the percentile window (as the loader does).
        percentiles: bounds of the percentile window.
        photometric_interpretation: used when the metadata does not say (``MONOCHROME1`` is inverted).
        window_center: used with ``window_width`` when the metadata has no window.
        window_width: see ``window_center``.

    Raises:
        ValueError: an array that is not a single-frame grey-scale image.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        voi: str = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        photometric_interpretation: str = "MONOCHROME2",
        window_center: float | None = None,
        window_width: float | None = None,
    ) -> None:
        self.voi = voi
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.photometric_interpretation = photometric_interpretation
        self.window_center = window_center
        self.window_width = window_width

    @staticmethod
    def is_loaded(image: Any) -> bool:
        """Whether ``image`` already went through the chest X-ray loader (its metadata records ``voi_source``)."""
        return isinstance(image, MetaTensor) and "voi_source" in image.meta

    def _dataset(self, meta: Mapping[str, Any]) -> pydicom.Dataset:
        ds = pydicom.Dataset()
        ds.PhotometricInterpretation = str(
            _meta_value(meta, "PhotometricInterpretation") or self.photometric_interpretation
        )
        presentation = _meta_value(meta, "PresentationLUTShape")
        if presentation:
            ds.PresentationLUTShape = str(presentation)
        center, width = _meta_value(meta, "WindowCenter"), _meta_value(meta, "WindowWidth")
        if center is None or width is None:
            center, width = self.window_center, self.window_width
        if center is not None and width is not None:
            ds.WindowCenter, ds.WindowWidth = center, width
            function = _meta_value(meta, "VOILUTFunction")
            if function:
                ds.VOILUTFunction = str(function)
        return ds

    @staticmethod
    def _plane(array: np.ndarray) -> np.ndarray:
        if array.ndim == 2:
            return array
        if array.ndim == 3 and array.shape[-1] == 1:
            return array[..., 0]
        if array.ndim == 3 and array.shape[0] == 1:
            return array[0]
        raise ValueError(
            f"expected a single-frame grey-scale radiograph as (W, H, 1), (W, H) or (1, W, H), got shape "
            f"{tuple(array.shape)}"
        )

    def __call__(self, image: Any) -> Any:
        """Return ``image`` unchanged when already loaded, else its display-normalised ``(1, W, H)`` form."""
        if self.is_loaded(image):
            return image
        meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
        plane = self._plane(convert_to_numpy(image))
        display, voi_source = dicom_to_display(
            self._dataset(meta),
            np.ascontiguousarray(plane),
            voi=self.voi,
            percentiles=self.percentiles,
            source="<array>",
        )
        meta["voi_source"] = voi_source
        meta["spatial_shape"] = np.asarray(display.shape)
        meta["original_channel_dim"] = float("nan")
        loaded = MetaTensor(torch.from_numpy(np.ascontiguousarray(display))[None], meta=meta)
        if "original_affine" not in loaded.meta:
            # the pixel grid the array arrived on: detection boxes are mapped back to it
            loaded.meta["original_affine"] = loaded.affine.clone()
        return loaded


class EnsureChestXrayd(MapTransform):
    """Dictionary form of :class:`EnsureChestXray`.

    Args:
        keys: image keys.
        allow_missing_keys: do not raise when a key is absent.
        kwargs: :class:`EnsureChestXray` arguments.
    """

    backend = EnsureChestXray.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = EnsureChestXray(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


EnsureChestXrayD = EnsureChestXrayDict = EnsureChestXrayd
