"""The last postprocessing steps of the downstream bundles: outputs in the form MONAI Deploy App SDK 4.x reads.

MONAI Deploy's ``MonaiBundleInferenceOperator`` runs a bundle's ``postprocessing`` (without its ``SaveImage``
transforms) and hands each output named in ``metadata.json`` (``network_data_format.outputs``) on by its
``type``:

* ``"image"``: the array loses its first (channel) axis; a 2-D remainder is kept as it is, a 3-D one has its
  first and last axes swapped into the ``(D, H, W)`` order of the SDK's ``Image``. MONAI's 2-D ``(W, H)`` mask
  would therefore reach the DICOM SEG writer transposed (read as ``(H, W)``).
  :class:`SingleFrameVolumed` gives it the trailing depth axis of a one-frame volume, ``(1, W, H, 1)``, which
  the SDK turns into ``(1, H, W)``: the source frame's orientation. The segmentation bundle's ``inference.json``
  ends with the ``(W, H)`` label map every other bundle client reads; the MONAI Deploy application adds this
  step after it.
* ``"probabilities"``: the SDK labels each value ``v`` with ``channel_def[str(int(v))]``, so the value must be
  the class index, not a probability (a probability below 1 always reads as class 0). The classification
  bundle thresholds its probability into ``pred`` and keeps the probability under ``probability``.
* ``"tuples"``: the value is passed on as an array. :class:`PackDetectionsd` packs the detector's boxes,
  scores and labels into one ``(N, 6)`` array.

Both run after the bundle's own ``SaveImaged`` or writers have read the outputs, so the bundle's
``inference.json`` output files are those of the same network run the SDK sees.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["SingleFrameVolumed", "PackDetectionsd", "DETECTION_COLUMNS"]

DETECTION_COLUMNS = ("x1", "y1", "x2", "y2", "score", "label")
"""The columns of :class:`PackDetectionsd`'s array (boxes in MONAI's StandardMode, ``x`` = DICOM column)."""


class SingleFrameVolumed(MapTransform):
    """``(C, W, H)`` → ``(C, W, H, 1)``: a 2-D image as the one-frame volume MONAI Deploy's ``Image`` expects.

    A ``(W, H)`` label map (what the segmentation bundle's ``inference.json`` ends with, as generic bundle clients
    such as MONAI Label expect) becomes ``(1, W, H, 1)``. The MONAI Deploy applications apply it after the
    bundle's postprocessing (:class:`~sista_monai.deploy.operators.BundleInferenceOperator`'s ``output_form``).

    Args:
        keys: the image keys (2-D: ``(W, H)`` or channel first ``(C, W, H)``).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: an input that is neither ``(W, H)`` nor ``(C, W, H)``.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].ndim not in (2, 3):
                raise ValueError(
                    f"{key!r}: expected a 2-D image, (W, H) or channel first (C, W, H), got shape {tuple(d[key].shape)}"
                )
            d[key] = d[key][None, ..., None] if d[key].ndim == 2 else d[key][..., None]
        return d


class PackDetectionsd(MapTransform):
    """Boxes, scores and labels of one image → one ``(N, 6)`` float32 tensor ``[x1, y1, x2, y2, score, label]``.

    Args:
        box_key: ``(N, 4)`` boxes.
        score_key: ``(N,)`` scores.
        label_key: ``(N,)`` class indices.
        output_key: where the packed array goes.
    """

    def __init__(
        self,
        box_key: str = "pred_box",
        score_key: str = "pred_score",
        label_key: str = "pred_label",
        output_key: str = "pred",
    ) -> None:
        super().__init__([box_key, score_key, label_key])
        self.box_key, self.score_key, self.label_key = box_key, score_key, label_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        boxes = torch.as_tensor(d[self.box_key], dtype=torch.float32).reshape(-1, 4)
        scores = torch.as_tensor(d[self.score_key], dtype=torch.float32).reshape(-1, 1)
        labels = torch.as_tensor(d[self.label_key], dtype=torch.float32).reshape(-1, 1)
        if not boxes.shape[0] == scores.shape[0] == labels.shape[0]:
            raise ValueError(
                f"{boxes.shape[0]} boxes, {scores.shape[0]} scores and {labels.shape[0]} labels: they must match"
            )
        d[self.output_key] = torch.cat([boxes, scores, labels], dim=1)
        return d
