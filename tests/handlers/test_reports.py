"""Evaluation reports: the segmentation overlay's orientation and the report's metrics and overlay files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from sista_monai.handlers import SegmentationReport
from sista_monai.metrics import EMPTY_MASK_RULE
from sista_monai.visualize import overlay_image


def _masks(*arrays: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.as_tensor(a, dtype=torch.float32)[None] for a in arrays])


def _square(top: int, left: int, size: int = 4, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


def test_overlay_orientation() -> None:
    image = torch.zeros(1, 20, 10)  # (W, H): 20 columns, 10 rows
    mask = torch.zeros(1, 20, 10)
    mask[0, 15, 2] = 1  # column 15, row 2
    overlay = np.asarray(overlay_image(image, mask, torch.zeros_like(mask)))
    assert overlay.shape == (10, 60, 3)
    assert overlay[2, 20 + 15, 1] > overlay[2, 20 + 15, 0]  # green ground truth at (row 2, column 15) of panel 2


def test_report_writes_metrics_and_overlays(tmp_path: Path) -> None:
    a, empty = _square(0, 0), np.zeros((16, 16), dtype=np.uint8)
    items = [
        {"pred_label": _masks(a)[0], "label": _masks(a)[0], "image": torch.rand(1, 16, 16)},
        {"pred_label": _masks(empty)[0], "label": _masks(empty)[0], "image": torch.rand(1, 16, 16)},
        {"pred_label": _masks(a)[0], "label": _masks(empty)[0], "image": torch.rand(1, 16, 16)},
    ]
    engine = Engine(lambda e, batch: batch)
    report = SegmentationReport(tmp_path, extra={"seed": 0}, num_overlays=2)
    report.attach(engine)
    engine.run([items], max_epochs=1)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["mean_dice"] == pytest.approx(2 / 3) and summary["positive_dice"] == pytest.approx(1.0)
    assert summary["metrics"]["mean_dice"] == summary["mean_dice"]
    assert summary["n"] == 3 and summary["positives"] == 1 and summary["seed"] == 0
    assert summary["empty_mask_rule"] == EMPTY_MASK_RULE
    assert summary["overlays"] == ["overlays/test_00.png", "overlays/test_01.png"]
    assert Image.open(tmp_path / "overlays" / "test_00.png").size == (48, 16)
