"""Detection networks on both encoders: the ViT feature pyramid, the detector, a frozen encoder left unchanged."""

from __future__ import annotations

import pytest
import torch

from sista_monai.engines import encoder_parameter_groups
from sista_monai.networks import (
    ResNetImageEncoder,
    ViTImageEncoder,
    ViTSimpleFeaturePyramid,
    build_detector,
    detection_network,
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
