"""DetectorInferer: the bundle's detector around whichever network MONAI Deploy loaded (TorchScript, a wrapper)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sista_monai.engines import DetectorInferer
from sista_monai.networks import build_detector, detection_network


def _detections(detector: Any, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    detector.eval()
    with torch.no_grad():
        found = detector(images, use_inferer=False)
    return [{"pred_box": f["box"], "pred_score": f["label_scores"], "pred_label": f["label"].long()} for f in found]


class _NotAModule:
    """A callable model that is not an ``nn.Module``, as MONAI Deploy's ``TorchScriptModel`` wrapper."""

    def __init__(self, model: Callable[[torch.Tensor], Any]) -> None:
        self.model = model

    def __call__(self, images: torch.Tensor) -> Any:
        return self.model(images)


def test_inferer_equals_the_detector_for_eager_scripted_and_wrapped_networks(tiny_vit: Callable[..., Any]) -> None:
    torch.manual_seed(0)
    network = detection_network(tiny_vit(img_size=64), num_anchors=3, fpn_channels=8).eval()
    detector = build_detector(network, score_threshold=0.0, detections_per_image=20)
    images = torch.rand(2, 1, 64, 64)
    expected = _detections(detector, images)
    assert sum(len(e["pred_box"]) for e in expected) > 0
    scripted = torch.jit.script(network)  # what ckpt_export writes into model.ts
    inferer = DetectorInferer(detector)
    for given in (network, scripted, _NotAModule(scripted)):
        actual = inferer(images, given)
        assert detector.network is network  # its own network is put back
        assert len(actual) == len(expected) == 2
        for a, e in zip(actual, expected, strict=True):
            assert set(a) == {"pred_box", "pred_score", "pred_label"}
            for key in a:
                torch.testing.assert_close(a[key], e[key], rtol=0, atol=1e-5)
    # the network given is the one run: other weights give the other network's detections
    torch.manual_seed(1)
    other = detection_network(tiny_vit(img_size=64), num_anchors=3, fpn_channels=8).eval()
    theirs = _detections(build_detector(other, score_threshold=0.0, detections_per_image=20), images)
    actual = inferer(images, _NotAModule(torch.jit.script(other)))
    assert not torch.allclose(theirs[0]["pred_score"], expected[0]["pred_score"])
    for a, t in zip(actual, theirs, strict=True):
        torch.testing.assert_close(a["pred_box"], t["pred_box"], rtol=0, atol=1e-5)
