"""The last postprocessing steps for MONAI Deploy: the one-frame mask volume and the packed detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from sista_monai.transforms import DETECTION_COLUMNS, PackDetectionsd, SingleFrameVolumed


def test_single_frame_volume_becomes_the_sdk_frame_in_source_orientation() -> None:
    """(1, W, H) → (1, W, H, 1); the SDK then squeezes the channel and swaps axes 0 and 2 into (1, H, W): the
    frame as rows x columns, i.e. the transpose of MONAI's (W, H) plane."""
    mask = MetaTensor(torch.arange(12, dtype=torch.float32).reshape(1, 3, 4))  # W=3 columns, H=4 rows
    out = SingleFrameVolumed(keys="pred")({"pred": mask})["pred"]
    assert tuple(out.shape) == (1, 3, 4, 1)
    sdk_frame = np.swapaxes(np.squeeze(out.numpy(), 0), 0, 2)  # MonaiBundleInferenceOperator._send_output
    assert sdk_frame.shape == (1, 4, 3)
    np.testing.assert_array_equal(sdk_frame[0], mask[0].numpy().T)
    label_map = mask[0].to(torch.uint8)  # the (W, H) label map the segmentation bundle's inference.json ends with
    volume = SingleFrameVolumed(keys="pred")({"pred": label_map})["pred"]
    assert tuple(volume.shape) == (1, 3, 4, 1) and volume.dtype == torch.uint8
    np.testing.assert_array_equal(np.swapaxes(np.squeeze(volume.numpy(), 0), 0, 2)[0], label_map.numpy().T)
    with pytest.raises(ValueError, match=r"\(C, W, H\)"):
        SingleFrameVolumed(keys="pred")({"pred": torch.zeros(1, 3, 4, 1)})


def test_pack_detections_rows_are_box_score_label() -> None:
    item = {
        "pred_box": torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
        "pred_score": torch.tensor([0.9, 0.2]),
        "pred_label": torch.tensor([0, 1]),
    }
    packed = PackDetectionsd()(item)["pred"]
    assert packed.dtype == torch.float32 and len(DETECTION_COLUMNS) == packed.shape[1] == 6
    torch.testing.assert_close(
        packed, torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.9, 0.0], [5.0, 6.0, 7.0, 8.0, 0.2, 1.0]]), rtol=0, atol=0
    )
    empty = PackDetectionsd()(
        {"pred_box": torch.zeros(0, 4), "pred_score": torch.zeros(0), "pred_label": torch.zeros(0)}
    )
    assert tuple(empty["pred"].shape) == (0, 6)
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        PackDetectionsd()({**item, "pred_score": torch.tensor([0.5])})
