"""Datalists of the downstream tasks: label fractions, segmentation and detection items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sista_monai.data.tasks import dataset_root, detection_datalist, label_fraction_key, segmentation_datalist


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


def test_segmentation_datalist_resolves_masks(tmp_path: Path) -> None:
    (tmp_path / "datalist_segmentation.json").write_text(
        json.dumps({"test": [{"id": "a", "image": "images/a.dcm", "mask": "masks/a.png"}]})
    )
    items = segmentation_datalist(tmp_path / "datalist_segmentation.json", "test")
    assert items == [{"id": "a", "image": str(tmp_path / "images/a.dcm"), "label": str(tmp_path / "masks/a.png")}]
    with pytest.raises(KeyError, match="training_1"):
        segmentation_datalist(tmp_path / "datalist_segmentation.json", "training_1")


@pytest.mark.parametrize(
    ("fraction", "key"),
    [(1, "training_1"), (10, "training_10"), (100, "training"), ("10", "training_10"), (1.0, "training_1")],
)
def test_label_fraction_keys(fraction: int | str | float, key: str) -> None:
    assert label_fraction_key(fraction) == key


@pytest.mark.parametrize("fraction", [5, 0, "all", None])
def test_unknown_label_fraction_is_refused(fraction: object) -> None:
    with pytest.raises(ValueError, match="label_fraction must be one of"):
        label_fraction_key(fraction)


def test_dataset_root_is_your_folder_or_the_demo_data(tmp_path: Path) -> None:
    assert dataset_root(tmp_path / "mine", demo_data="false") == str(tmp_path / "mine")
    assert not (tmp_path / "mine").exists()  # nothing generated for your own data
    with pytest.raises(ValueError, match="demo_data must be true or false"):
        dataset_root(tmp_path, demo_data="perhaps")
