"""Segmentation pieces: Dice/IoU on hand-made masks (with the empty-mask rule), the networks, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.metrics import DiceMetric, MeanIoU
from PIL import Image

from sista_monai.data.tasks import segmentation_datalist
from sista_monai.engines import encoder_parameter_groups
from sista_monai.handlers import SegmentationReport
from sista_monai.metrics import EMPTY_MASK_RULE, dice_iou, segmentation_summary
from sista_monai.networks import ResNetImageEncoder, ViTImageEncoder, ViTSegmentationNet, segmentation_network
from sista_monai.visualize import overlay_image


def _masks(*arrays: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.as_tensor(a, dtype=torch.float32)[None] for a in arrays])


def _square(top: int, left: int, size: int = 4, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


def test_dice_and_iou_on_hand_made_masks() -> None:
    empty = np.zeros((16, 16), dtype=np.uint8)
    a, b = _square(0, 0), _square(8, 8)  # disjoint
    half = _square(0, 2)  # shares 8 of its 16 pixels with a
    pred = _masks(a, a, empty, a, empty, half)
    true = _masks(a, b, empty, empty, a, a)
    dice, iou = dice_iou(pred, true)
    assert dice.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    assert iou.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0, 0.0, 8 / 24])
    summary = segmentation_summary(dice, iou, (true.flatten(1) > 0).any(1))
    assert summary["n"] == 6 and summary["positives"] == 4
    assert summary["mean_dice"] == pytest.approx(2.5 / 6)
    assert summary["positive_dice"] == pytest.approx(1.5 / 4)
    assert "empty ground truth and empty prediction: Dice = IoU = 1" in EMPTY_MASK_RULE


def test_monai_metrics_follow_the_same_empty_rule() -> None:
    """The evaluators' MONAI metrics (ignore_empty=False) score exactly as dice_iou does."""
    rng = np.random.default_rng(0)
    empty = np.zeros((16, 16), dtype=np.uint8)
    masks = [rng.random((16, 16)) > 0.7 for _ in range(3)]
    pred = _masks(masks[0], masks[1], empty, masks[2], empty)
    true = _masks(masks[0], masks[2], empty, empty, masks[1])
    dice, iou = dice_iou(pred, true)
    monai_dice = DiceMetric(include_background=True, ignore_empty=False, reduction="none")(pred, true)
    monai_iou = MeanIoU(include_background=True, ignore_empty=False, reduction="none")(pred, true)
    torch.testing.assert_close(monai_dice.flatten(), dice)
    torch.testing.assert_close(monai_iou.flatten(), iou)


def test_dice_iou_accepts_numpy_and_rejects_mismatched_shapes() -> None:
    a = _square(2, 2)[None]
    dice, iou = dice_iou(a, a.astype(bool))
    assert dice.tolist() == iou.tolist() == [1.0]
    with pytest.raises(ValueError, match="shape"):
        dice_iou(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def _vit(layers: int = 2) -> ViTImageEncoder:
    return ViTImageEncoder(
        img_size=32, patch_size=16, preset="tiny", hidden_size=16, mlp_dim=32, num_layers=layers, num_heads=2
    )


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_networks_shapes_torchscript_and_frozen_encoder(kind: str) -> None:
    torch.manual_seed(0)
    encoder = _vit() if kind == "vit" else ResNetImageEncoder(depth=10, img_size=32)
    reference = {k: v.clone() for k, v in encoder.state_dict().items()}
    network = segmentation_network(encoder, feature_size=4, norm_name="batch", decoder_channels=(32, 16, 8, 8, 4))
    prefix = "" if kind == "vit" else "unet.encoder."
    state = network.state_dict()
    for key, value in reference.items():  # the pretrained weights are the network's, under a fixed prefix
        assert torch.equal(state[prefix + key], value), key
    groups = encoder_parameter_groups(network, 1e-3, 1e-4, 0.0)
    assert [g["name"] for g in groups] == ["head"]  # frozen encoder: not in the optimiser
    network.train()
    assert not network.encoder.training
    image = torch.randn(2, 1, 32, 32)
    loss = network(image).mean()
    loss.backward()
    assert all(p.grad is None for p in network.encoder.parameters())
    network.eval()
    with torch.no_grad():
        eager = network(image)
        scripted = torch.jit.script(network)(image)
    assert eager.shape == (2, 1, 32, 32)
    torch.testing.assert_close(scripted, eager, rtol=0, atol=1e-5)
    assert float(torch.sigmoid(eager).mean()) < 0.2  # the output bias starts at the foreground prior


def test_vit_network_options_and_refusals() -> None:
    network = ViTSegmentationNet(_vit(3), freeze_encoder="false", output="probabilities", feature_size=4)
    assert (network.skip1, network.skip2, network.skip3) == (0, 0, 1)
    assert {g["name"] for g in encoder_parameter_groups(network, 1e-3, 1e-4, 0.0)} == {"head", "encoder"}
    with torch.no_grad():
        out = network.eval()(torch.randn(1, 1, 32, 32))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match="16x16"):
        ViTSegmentationNet(
            ViTImageEncoder(
                img_size=32, patch_size=8, preset="tiny", hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2
            )
        )
    with pytest.raises(ValueError, match="skip_blocks"):
        ViTSegmentationNet(_vit(2), skip_blocks=[0, 1, 5])
    with pytest.raises(ValueError, match="conv1_stride"):
        segmentation_network(ResNetImageEncoder(depth=10, img_size=32, conv1_stride=1))
    with pytest.raises(TypeError):
        segmentation_network(torch.nn.Conv2d(1, 1, 1))


def test_segmentation_datalist_resolves_masks(tmp_path: Path) -> None:
    (tmp_path / "datalist_segmentation.json").write_text(
        json.dumps({"test": [{"id": "a", "image": "images/a.dcm", "mask": "masks/a.png"}]})
    )
    items = segmentation_datalist(tmp_path / "datalist_segmentation.json", "test")
    assert items == [{"id": "a", "image": str(tmp_path / "images/a.dcm"), "label": str(tmp_path / "masks/a.png")}]
    with pytest.raises(KeyError, match="training_1"):
        segmentation_datalist(tmp_path / "datalist_segmentation.json", "training_1")


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
