"""Detection pieces: networks on both encoders, the detector, box geometry through preprocessing, datalists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.apps.detection.transforms.dictionary import ClipBoxToImaged, ConvertBoxToStandardModed, RandFlipBoxd
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCropd, Compose, NormalizeIntensityd, Resized, SpatialPadd

from sista_monai.data.tasks import detection_datalist
from sista_monai.engines import encoder_parameter_groups
from sista_monai.handlers import DetectionJSONWriter
from sista_monai.networks import (
    ResNetImageEncoder,
    ViTImageEncoder,
    ViTSimpleFeaturePyramid,
    build_detector,
    detection_network,
)
from sista_monai.transforms import (
    BoxesToImagePixelsd,
    BoxesToOriginalPixelsd,
    EnsureChestXrayd,
    LoadChestXrayd,
    map_boxes,
)

TINY_VIT = {
    "img_size": 64,
    "patch_size": 16,
    "preset": "tiny",
    "hidden_size": 32,
    "mlp_dim": 64,
    "num_layers": 1,
    "num_heads": 2,
}


def _vit() -> ViTImageEncoder:
    torch.manual_seed(0)
    return ViTImageEncoder(**TINY_VIT)


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


def test_vit_pyramid_levels_and_frozen_encoder() -> None:
    encoder = _vit()
    pyramid = ViTSimpleFeaturePyramid(encoder, out_channels=16)
    maps = pyramid(torch.randn(2, 1, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    assert pyramid.strides == (8, 16, 32)
    assert not any(p.requires_grad for p in encoder.vit.parameters())
    pyramid.train()
    assert not pyramid.vit.training and pyramid.levels.training


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_detector_trains_and_leaves_a_frozen_encoder_unchanged(arch: str) -> None:
    torch.manual_seed(0)
    encoder = _vit() if arch == "vit" else ResNetImageEncoder(depth=10, img_size=64)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    network = detection_network(encoder, fpn_channels=16)
    detector = build_detector(network)
    # anchors have the same size in pixels on both encoders: level scale = stride / 8
    finest = detector.anchor_generator.cell_anchors[0]
    scale = network.feature_extractor.strides[0] / 8
    torch.testing.assert_close(
        finest[:, 2:] - finest[:, :2], torch.tensor([[16.0, 16.0], [12.0, 20.0], [20.0, 12.0]]) * scale
    )
    groups = encoder_parameter_groups(network, 1e-2)
    assert [g["name"] for g in groups] == ["head"]
    optimizer = torch.optim.SGD(groups[0]["params"], lr=1e-2)
    images = torch.randn(2, 1, 64, 64)
    targets = [
        {"box": torch.tensor([[10.0, 12.0, 34.0, 40.0]]), "label": torch.tensor([0])},
        {"box": torch.zeros(0, 4), "label": torch.zeros(0, dtype=torch.long)},
    ]
    detector.train()
    for _ in range(2):
        losses = detector(images, targets)
        assert set(losses) == {"classification", "box_regression"} and all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    detector.eval()
    with torch.no_grad():
        found = detector(images)
    assert len(found) == 2 and set(found[0]) == {"box", "label", "label_scores"}


def test_vit_detector_refuses_an_image_size_its_pyramid_cannot_tile() -> None:
    encoder = ViTImageEncoder(**{**TINY_VIT, "img_size": 48})
    with pytest.raises(ValueError, match=r"divisible by 32.*\(48, 48\)"):
        detection_network(encoder)


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


def test_detection_datalist_resolves_paths_and_names_bad_rows(tmp_path: Path) -> None:
    content = {
        "box_mode": "xywh",
        "training": [
            {"id": "p1", "image": "images/p1.dcm", "boxes": [[1, 2, 3, 4]], "labels": [0]},
            {"id": "p2", "image": "images/p2.dcm", "boxes": [], "labels": []},
        ],
        "test": [
            {"id": "bad", "image": "images/b.dcm", "boxes": [[1, 2, 0, 4]], "labels": [0]},
            {"id": "fine", "image": "images/f.dcm", "boxes": [], "labels": []},
            {"id": "text", "image": "images/t.dcm", "boxes": [["a", 2, 3, 4]], "labels": [0]},
        ],
        "validation": [{"id": "odd", "image": "images/o.dcm", "boxes": [[1, 2, 3, 4]], "labels": []}],
    }
    path = tmp_path / "datalist_detection.json"
    path.write_text(json.dumps(content))
    items = detection_datalist(path, "training")
    assert items[0] == {
        "id": "p1",
        "image": str(tmp_path / "images/p1.dcm"),
        "box": [[1.0, 2.0, 3.0, 4.0]],
        "label": [0],
    }
    assert items[1]["box"] == [] and items[1]["label"] == []
    with pytest.raises(ValueError, match=r"2 bad item\(s\)") as raised:  # every bad item in one message
        detection_datalist(path, "test")
    assert "test[0] (id bad): box [1, 2, 0, 4]" in str(raised.value) and "test[2] (id text)" in str(raised.value)
    assert "fine" not in str(raised.value)
    with pytest.raises(ValueError, match=r"id odd.*1 boxes but 0 labels"):
        detection_datalist(path, "validation")
    with pytest.raises(KeyError, match="no 'training_1' split"):
        detection_datalist(path, "training_1")


def test_json_writer_sorts_by_score_and_writes_rsna_boxes(tmp_path: Path) -> None:
    image = MetaTensor(
        torch.zeros(1, 128, 128), meta={"filename_or_obj": "/in/patient_x.dcm", "spatial_shape": np.array([1024, 768])}
    )
    writer = DetectionJSONWriter(tmp_path, class_names={"0": "Lung Opacity"})
    record = writer.record(
        {
            "pred_box": torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 5.0, 5.0]]),
            "pred_score": torch.tensor([0.2, 0.9]),
            "pred_label": torch.tensor([0, 0]),
        },
        image,
    )
    assert record["image"] == "patient_x.dcm" and (record["width"], record["height"]) == (1024, 768)
    assert record["scores"] == [0.9, 0.2]
    assert record["boxes"] == [[0.0, 0.0, 5.0, 5.0], [10.0, 20.0, 110.0, 220.0]]
    assert record["boxes_xywh"][1] == [10.0, 20.0, 100.0, 200.0]
    assert record["label_names"] == ["Lung Opacity", "Lung Opacity"]


def test_trainer_stops_on_a_non_finite_loss_naming_the_iteration() -> None:
    from monai.data import DataLoader
    from monai.data.utils import no_collation

    from sista_monai.engines import DetectionTrainer
    from sista_monai.errors import NonFiniteLossError

    network = detection_network(_vit(), fpn_channels=16)
    detector = build_detector(network)
    good = {"image": torch.randn(1, 64, 64), "box": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "label": torch.tensor([0])}
    bad = {**good, "image": torch.full((1, 64, 64), float("nan"))}
    loader = DataLoader([good, good, bad, good], batch_size=2, collate_fn=no_collation)
    trainer = DetectionTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3),
        detector=detector,
    )
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"iteration 2 \(epoch 1\)"):
        trainer.run()
    changed = [k for k, v in network.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(torch.isfinite(v).all() for v in network.state_dict().values())  # the bad step was not taken
