"""Per-image prediction files of the inference bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from sista_monai.handlers import DetectionJSONWriter


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
