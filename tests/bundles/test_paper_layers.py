"""The paper-scale layers of the segmentation and detection bundles (``paper.json``, ``paper_resnet50.json``): the
pretraining recipe's architecture at 224 px, parsed on ``train.json`` and run once on a 224 × 224 image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bundle_helpers import REPO_ROOT
from monai.bundle import ConfigParser

BUNDLES = ("siim_pneumothorax_segmentation", "rsna_pneumonia_detection")
LAYERS = ("paper.json", "paper_resnet50.json")

pytestmark = pytest.mark.slow


def _layers(bundle: str, layer: str) -> list[str]:
    configs = REPO_ROOT / "bundles" / bundle / "configs"
    files = [configs / "train.json", configs / "paper.json"]
    return [str(f) for f in files + ([configs / layer] if layer != "paper.json" else [])]


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("bundle", BUNDLES)
def test_the_paper_layer_is_the_pretraining_recipe_and_runs_at_224(bundle: str, layer: str, tmp_path: Path) -> None:
    own = json.loads((REPO_ROOT / "bundles" / bundle / "configs" / layer).read_text())
    pretrain = json.loads((REPO_ROOT / "bundles" / "pretrain" / "configs" / layer).read_text())
    # the architecture the pretraining recipe trains (its ImageNet start is for pretraining only)
    assert own["image_encoder"] == {k: v for k, v in pretrain["image_encoder"].items() if k != "pretrained"}
    paper = json.loads((REPO_ROOT / "bundles" / bundle / "configs" / "paper.json").read_text())
    pretrain_paper = json.loads((REPO_ROOT / "bundles" / "pretrain" / "configs" / "paper.json").read_text())
    assert (paper["image_size"], paper["resize_size"]) == (pretrain_paper["image_size"], pretrain_paper["resize_size"])
    assert paper["demo_data"] is False and not Path(paper["dataset_dir"]).is_absolute()
    parser = ConfigParser()
    parser.read_config(_layers(bundle, layer))
    parser.update({"bundle_root": str(tmp_path), "pretrained_encoder": None, "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network_def").eval()
    image = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        output = network(image)
    if bundle.startswith("siim"):
        assert output.shape == (1, 1, 224, 224) and torch.isfinite(output).all()
    else:
        heads = list(output.values()) if isinstance(output, dict) else list(output)
        assert heads and all(
            torch.isfinite(t).all() for head in heads for t in (head if isinstance(head, list) else [head])
        )
