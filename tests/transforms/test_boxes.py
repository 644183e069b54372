"""Boxes through the image geometry: exact at pixel edges, round trips through preprocessing, flips, crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.apps.detection.transforms.dictionary import ClipBoxToImaged, ConvertBoxToStandardModed, RandFlipBoxd
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCropd, Compose, NormalizeIntensityd, Resized, SpatialPadd

from sista_monai.transforms import (
    BoxesToImagePixelsd,
    BoxesToOriginalPixelsd,
    EnsureChestXrayd,
    LoadChestXrayd,
    map_boxes,
)


def _preprocessing(resize: int, crop: int) -> list:
    """The bundle's deterministic box path: load, boxes to xyxy, image-only resize/pad/normalise/crop, boxes mapped."""
    return [
        LoadChestXrayd("image"),
        EnsureChestXrayd("image"),
        ConvertBoxToStandardModed("box", mode="xywh"),
        Resized("image", resize, size_mode="longest", mode="area"),
        SpatialPadd("image", [resize, resize]),
        NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25),
        CenterSpatialCropd("image", [crop, crop]),
        BoxesToImagePixelsd("box", "image"),
    ]


def test_map_boxes_is_exact_at_pixel_edges() -> None:
    # resize by 0.5 (centre-convention affine: index i_new = 2 i_old + 0.5 ... written as index-to-index map)
    scale = torch.tensor([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]], dtype=torch.float64)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 50.0]])
    torch.testing.assert_close(map_boxes(boxes, scale), torch.tensor([[5.0, 10.0, 15.0, 25.0]]))
    torch.testing.assert_close(map_boxes(map_boxes(boxes, scale), torch.linalg.inv(scale)), boxes)
    assert map_boxes(torch.zeros(0, 4), scale).shape == (0, 4)


def _write_dicom(dicom_writer, path: Path, rows: int, cols: int, box: tuple[int, int, int, int]) -> np.ndarray:
    pixels = np.full((rows, cols), 200, dtype=np.uint16)
    x, y, w, h = box
    pixels[y : y + h, x : x + w] = 3000
    dicom_writer(str(path), pixels, BitsStored=12, HighBit=11)
    return pixels


def test_a_box_survives_the_preprocessing_round_trip(tmp_path: Path, dicom_writer) -> None:
    rows, cols, box = 300, 420, (250, 60, 90, 120)  # non-square: x is the column, y the row
    _write_dicom(dicom_writer, tmp_path / "a.dcm", rows, cols, box)
    item = {
        "image": str(tmp_path / "a.dcm"),
        "box": torch.tensor([list(box)], dtype=torch.float32),
        "label": torch.tensor([0]),
    }
    data = Compose(_preprocessing(144, 128))(item)
    image = data["image"]
    assert tuple(image.shape) == (1, 128, 128)
    # by hand: longest side 420 -> 144 (factor 144/420), the 300 rows -> 102.86, padded by (144 - 102.86) / 2 rows
    # (MONAI rounds the resized size: 103 rows, pad 20 before), then 8 pixels cropped on each side
    f = 144 / 420
    rows_resized = round(300 * f)
    pad = (144 - rows_resized) // 2
    expected = [250 * f - 8, 60 * (rows_resized / 300) + pad - 8, 340 * f - 8, 180 * (rows_resized / 300) + pad - 8]
    torch.testing.assert_close(data["box"], torch.tensor([expected]), atol=1e-3, rtol=0)
    # the bright rectangle of the image is where the box says (within one network pixel)
    bright = (image[0] > 1.0).nonzero()
    x0, y0 = bright.min(0).values.tolist()
    x1, y1 = (bright.max(0).values + 1).tolist()
    assert np.allclose([x0, y0, x1, y1], expected, atol=1.0)
    # and back to the original pixels: within a pixel of the label
    back = BoxesToOriginalPixelsd("pred_box", "image")({"image": image, "pred_box": data["box"]})["pred_box"]
    torch.testing.assert_close(back, torch.tensor([[250.0, 60.0, 340.0, 180.0]]), atol=1.0, rtol=0)


def test_flip_and_clip_follow_the_image(tmp_path: Path, dicom_writer) -> None:
    _write_dicom(dicom_writer, tmp_path / "b.dcm", 128, 128, (100, 30, 40, 20))  # runs past the right edge after crop
    item = {
        "image": str(tmp_path / "b.dcm"),
        "box": torch.tensor([[100.0, 30.0, 40.0, 20.0]]),
        "label": torch.tensor([0]),
    }
    data = Compose(_preprocessing(128, 112) + [ClipBoxToImaged("box", "label", "image", remove_empty=True)])(item)
    torch.testing.assert_close(data["box"], torch.tensor([[92.0, 22.0, 112.0, 42.0]]))
    flipped = RandFlipBoxd("image", "box", "image", prob=1.0, spatial_axis=0)(data)
    torch.testing.assert_close(flipped["box"], torch.tensor([[0.0, 22.0, 20.0, 42.0]]))
    bright = (flipped["image"][0] > 1.0).nonzero()
    assert bright[:, 0].min() == 0 and bright[:, 0].max() == 19


def test_boxes_follow_a_random_crop_of_a_cached_plain_tensor() -> None:
    from monai.transforms import RandSpatialCropd

    image = torch.zeros(1, 144, 144)
    image[:, 40:60, 70:100] = 1.0  # x (dim 0) 40..60, y (dim 1) 70..100
    crop = RandSpatialCropd("image", [128, 128], random_size=False)
    crop.set_random_state(3)
    data = BoxesToImagePixelsd("box", "image", source="plain")(
        crop({"image": image, "box": torch.tensor([[40.0, 70.0, 60.0, 100.0]])})
    )
    x0, y0 = [int(v) for v in data["image"].affine[:2, 3]]  # the crop's offset
    torch.testing.assert_close(data["box"], torch.tensor([[40.0 - x0, 70.0 - y0, 60.0 - x0, 100.0 - y0]]))
    bright = (data["image"][0] > 0.5).nonzero()
    assert bright.min(0).values.tolist() == [40 - x0, 70 - y0]
    with pytest.raises(ValueError, match="source must be one of"):
        BoxesToImagePixelsd("box", source="world")


def test_deploy_array_input_maps_back_to_its_own_pixels() -> None:
    array = MetaTensor(torch.rand(200, 100, 1))  # MONAI Deploy's (W, H, 1) array, no loader metadata
    data = Compose(
        [
            EnsureChestXrayd("image"),
            Resized("image", 144, size_mode="longest", mode="area"),
            SpatialPadd("image", [144, 144]),
            CenterSpatialCropd("image", [128, 128]),
        ]
    )({"image": array})
    box = torch.tensor([[0.0, 0.0, 128.0, 128.0]])
    back = BoxesToOriginalPixelsd("box", "image")({**data, "box": box})["box"]
    # resized by 0.72 to 144 x 72, padded by 36 rows on each side, cropped by 8: the whole crop covers columns
    # 8 / 0.72 .. 136 / 0.72 and rows (8 - 36) / 0.72 .. (136 - 36) / 0.72, clipped to the 200 x 100 image
    torch.testing.assert_close(back, torch.tensor([[8 / 0.72, 0.0, 136 / 0.72, 100.0]]), atol=1e-3, rtol=0)
