"""The MONAI Deploy operators' frame handling: the SDK's array + the tags → the image the bundles' loader gives.

The SDK's ``DICOMSeriesToVolumeOperator`` array is reproduced with pydicom's own functions, as the SDK (4.0) makes
it: ``apply_presentation_lut(apply_modality_lut(pixels))`` stacked as ``(1, Rows, Columns)``; its bundle operator
then swaps axes 0 and 2 into MONAI's ``(W, H, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.pixels.processing import apply_modality_lut, apply_presentation_lut

from sista_monai.errors import ChestXrayReadError
from sista_monai.transforms import EnsureChestXrayd, LoadChestXray

operators = pytest.importorskip(
    "sista_monai.deploy.operators", reason="the [deploy] extra (monai-deploy-app-sdk) is not installed"
)

VARIANTS = [
    # photometric, presentation LUT shape, window (center, width), rescale (slope, intercept)
    ("MONOCHROME2", None, None, None),
    ("MONOCHROME2", "IDENTITY", (1800.0, 2400.0), (1.0, 0.0)),
    ("MONOCHROME1", None, None, None),
    ("MONOCHROME1", None, (2100.0, 3000.0), (2.0, -1000.0)),
    ("MONOCHROME1", "INVERSE", None, None),
    ("MONOCHROME1", "INVERSE", (2100.0, 3000.0), (1.0, 0.0)),
    ("MONOCHROME1", "INVERSE", (1500.0, 2000.0), (0.5, 100.0)),
    ("MONOCHROME2", "INVERSE", (1800.0, 2400.0), None),
]


def _sdk_frame(path: Path) -> tuple[np.ndarray, pydicom.Dataset]:
    dataset = pydicom.dcmread(path)
    values = apply_presentation_lut(apply_modality_lut(dataset.pixel_array, dataset), dataset)
    return np.asarray(values)[None], dataset


@pytest.mark.parametrize("photometric, shape, window, rescale", VARIANTS)
def test_frame_with_tags_gives_the_loaders_image(
    dicom_writer: Callable[..., Path], photometric: str, shape: Any, window: Any, rescale: Any
) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(200, 4000, size=(40, 56), dtype=np.uint16)  # 40 rows, 56 columns
    elements: dict[str, Any] = {"PhotometricInterpretation": photometric, "PixelSpacing": [0.2, 0.15]}
    if shape:
        elements["PresentationLUTShape"] = shape
    if window:
        elements["WindowCenter"], elements["WindowWidth"] = window
    if rescale:
        elements["RescaleSlope"], elements["RescaleIntercept"] = rescale
    path = dicom_writer("frame.dcm", pixels, **elements)
    expected = LoadChestXray()(path)

    array, dataset = _sdk_frame(path)
    values, meta = operators.prepare_frame(array, {}, dataset)
    np.testing.assert_allclose(meta["affine"], np.diag([0.15, 0.2, 1.0, 1.0]))
    assert (meta["row_pixel_spacing"], meta["col_pixel_spacing"]) == (0.2, 0.15)
    assert meta["PhotometricInterpretation"] == photometric
    converted = np.swapaxes(values, 0, 2)  # MonaiBundleInferenceOperator._convert_from_image_dicom_source
    image = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(converted)), meta={**meta, "original_channel_dim": "no_channel"}
    )
    actual = EnsureChestXrayd(keys="image")({"image": image})["image"]
    assert tuple(actual.shape) == tuple(expected.shape) == (1, 56, 40)
    torch.testing.assert_close(actual.as_tensor(), expected.as_tensor(), rtol=0, atol=1e-5)


def test_without_undoing_the_sdk_inverse_the_image_is_wrong(dicom_writer: Callable[..., Path]) -> None:
    """The failure the operator prevents: the SDK's INVERSE array with the file's tags is inverted twice."""
    pixels = np.random.default_rng(1).integers(200, 4000, size=(32, 32), dtype=np.uint16)
    path = dicom_writer("inverse.dcm", pixels, PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE")
    expected = LoadChestXray()(path)
    array, dataset = _sdk_frame(path)
    _, meta = operators.prepare_frame(array, {}, dataset)
    raw = MetaTensor(torch.from_numpy(np.ascontiguousarray(np.swapaxes(array, 0, 2)).astype(np.float32)), meta=meta)
    wrong = EnsureChestXrayd(keys="image")({"image": raw})["image"]
    assert float((wrong - expected).abs().mean()) > 0.5


def test_refusals_name_the_file(dicom_writer: Callable[..., Path]) -> None:
    path = dicom_writer("lut.dcm", np.zeros((8, 8), dtype=np.uint16), PresentationLUTShape="INVERSE")
    dataset = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = list(range(256))
    dataset.PresentationLUTSequence = [item]
    with pytest.raises(ChestXrayReadError, match="lut.dcm.*Presentation LUT Sequence"):
        operators.modality_values(np.zeros((1, 8, 8)), dataset)
    with pytest.raises(ChestXrayReadError, match="lut.dcm.*one frame"):
        operators.prepare_frame(np.zeros((2, 8, 8)), {}, pydicom.dcmread(path))
    no_spacing = pydicom.dcmread(dicom_writer("plain.dcm", np.zeros((8, 8), dtype=np.uint16)))
    np.testing.assert_array_equal(operators.frame_affine(no_spacing), np.eye(4))
