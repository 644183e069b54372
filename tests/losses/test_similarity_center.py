"""Centred report similarity and the fitted centre (the mean frozen-encoder report feature)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import TINY_BERT
from torch.utils.data import DataLoader

from sista_monai.losses import ReportSimilarity, fit_report_center, report_center
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder


def test_centring_flips_a_near_parallel_pair() -> None:
    features = torch.tensor([[10.0, 1.0], [10.0, -1.0], [10.0, 0.0]])
    raw = ReportSimilarity("text_frozen", gather_distributed=False)(features)
    assert raw[0, 1].item() == pytest.approx(99 / 101, rel=1e-6)  # (100 - 1) / (√101 √101)
    assert raw[0, 2].item() == pytest.approx(10 / math.sqrt(101), rel=1e-6)

    centred = ReportSimilarity("text_frozen", gather_distributed=False, center=torch.tensor([10.0, 0.0]))(features)
    # (0, 1) and (0, -1): opposite; the third report is the centre itself, a zero vector: similarity 0
    expected = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(centred, expected)

    # a list centre works too, for the online source as well, and the result has no gradient
    online = ReportSimilarity("text_online", gather_distributed=False, center=[10.0, 0.0])
    result = online(features.clone().requires_grad_())
    torch.testing.assert_close(result, expected)
    assert not result.requires_grad
    assert "center" not in online.state_dict()  # the centre is refitted, not a checkpoint entry


def test_centre_is_fixed_so_similarity_does_not_depend_on_the_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, generator=generator) + 3.0
    centre = features.mean(0)
    similarity = ReportSimilarity("text_frozen", gather_distributed=False, center=centre)
    full = similarity(features)
    torch.testing.assert_close(similarity(features[2:5]), full[2:5, 2:5])
    # the plain formula: cosine of the centred vectors
    centred = features - centre
    reference = torch.tensor(
        [[float(centred[i] @ centred[j] / (centred[i].norm() * centred[j].norm())) for j in range(6)] for i in range(6)]
    )
    torch.testing.assert_close(full, reference, rtol=1e-5, atol=1e-6)
    # a zero centre is the raw cosine
    torch.testing.assert_close(
        ReportSimilarity("text_frozen", gather_distributed=False, center=torch.zeros(5))(features),
        ReportSimilarity("text_frozen", gather_distributed=False)(features),
    )


def test_centre_errors() -> None:
    with pytest.raises(ValueError, match="not to 'labels'"):
        ReportSimilarity("labels", center=torch.zeros(3))
    with pytest.raises(ValueError, match="1-D"):
        ReportSimilarity("text_frozen", center=torch.zeros(1, 3))
    similarity = ReportSimilarity("text_frozen", gather_distributed=False, center=torch.zeros(3))
    with pytest.raises(ValueError, match="4 features but center has 3"):
        similarity(torch.ones(2, 4))


def _tiny_model(frozen: bool = True) -> SISTAModel:
    torch.manual_seed(0)
    return SISTAModel(
        ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1),
        HuggingFaceTextEncoder(config=TINY_BERT),
        embed_dim=8,
        keep_frozen_text_copy=frozen,
    )


def _batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    items = []
    for index in range(5):
        ids = torch.randint(5, 40, (12,), generator=generator)
        ids[0], ids[6 + index] = 2, 3
        mask = torch.zeros(12, dtype=torch.long)
        mask[: 7 + index] = 1
        items.append({"input_ids": ids * mask, "attention_mask": mask})
    return items


def test_fit_report_center_is_the_mean_frozen_feature() -> None:
    model = _tiny_model()
    items = _batches()
    loader = DataLoader(items, batch_size=2)  # batches of 2, 2 and 1: a mean over items, not over batches
    # train the online encoder a little so that the frozen copy and the online encoder differ
    with torch.no_grad():
        for parameter in model.text_encoder.parameters():
            parameter.add_(0.05)
    model.train()
    centre = fit_report_center(model, loader)
    assert model.training and not model.frozen_text_encoder.training  # training mode restored
    with torch.no_grad():
        features = [
            model.frozen_text_encoder(item["input_ids"][None], item["attention_mask"][None]).global_features[0]
            for item in items
        ]
    expected = torch.stack(features).mean(0)
    assert centre.shape == (16,) and centre.dtype == torch.float32 and centre.device.type == "cpu"
    torch.testing.assert_close(centre, expected, rtol=1e-5, atol=1e-6)

    model.eval()
    online_centre = fit_report_center(model, loader, source="text_online")
    with torch.no_grad():  # in eval mode: no dropout
        online = [model.encode_text(item["input_ids"][None], item["attention_mask"][None])[0][0] for item in items]
    assert not model.training
    assert online_centre.shape == (8,)
    torch.testing.assert_close(online_centre, torch.stack(online).mean(0), rtol=1e-5, atol=1e-6)


def test_fit_report_center_errors() -> None:
    model = _tiny_model()
    with pytest.raises(ValueError, match="text sources"):
        fit_report_center(model, _batches(), source="labels")
    with pytest.raises(ValueError, match="empty data loader"):
        fit_report_center(model, [])
    with pytest.raises(ValueError, match="keep_frozen_text_copy=True"):
        fit_report_center(_tiny_model(frozen=False), DataLoader(_batches(), batch_size=2))


def test_report_center_is_fitted_for_the_frozen_source_only() -> None:
    model = _tiny_model()
    loader = DataLoader(_batches(), batch_size=2)
    torch.testing.assert_close(report_center(model, loader, "text_frozen"), fit_report_center(model, loader))
    assert report_center(model, loader, "text_online") is None
    assert report_center(model, loader, "labels") is None
