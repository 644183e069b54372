"""PositionCentering: the running mean per patch position, removed before the patch head's normalisation."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from sista_monai.networks import (
    HuggingFaceTextEncoder,
    PositionCentering,
    ProjectionHead,
    SISTAModel,
    ViTImageEncoder,
)

SMALL_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 120,
    "max_position_embeddings": 64,
}


def test_running_mean_by_hand() -> None:
    centering = PositionCentering(2, 3, momentum=0.5)
    first = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]], [[3.0, 2.0, 1.0], [2.0, 0.0, 0.0]]])
    out = centering(first)
    torch.testing.assert_close(out, first)  # centred with the mean before this batch: zero
    torch.testing.assert_close(centering.running_mean, torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.0, 1.0]]))
    second = torch.zeros(1, 2, 3)
    out = centering(second)
    torch.testing.assert_close(out, -torch.tensor([[[1.0, 1.0, 1.0], [0.5, 0.0, 1.0]]]))
    torch.testing.assert_close(centering.running_mean, torch.tensor([[0.5, 0.5, 0.5], [0.25, 0.0, 0.5]]))
    centering.eval()
    centering(torch.ones(4, 2, 3))
    torch.testing.assert_close(centering.running_mean, torch.tensor([[0.5, 0.5, 0.5], [0.25, 0.0, 0.5]]))


def test_each_embedding_is_independent_of_its_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4, 8)
    alone, together = PositionCentering(4, 8), PositionCentering(4, 8)
    alone.running_mean.copy_(torch.randn(4, 8))
    together.running_mean.copy_(alone.running_mean)
    torch.testing.assert_close(alone(x[:1]), together(x)[:1])


def test_a_shared_position_code_is_removed() -> None:
    """Patches that are a code shared by every image plus an image-specific part keep only the image's part."""
    torch.manual_seed(0)
    code = 5.0 * torch.randn(16, 8)
    centering = PositionCentering(16, 8, momentum=0.1)
    for _ in range(200):
        centering(code + 0.1 * torch.randn(32, 16, 8))
    torch.testing.assert_close(centering.running_mean, code, atol=0.02, rtol=0)
    lesion = torch.zeros(1, 16, 8)
    lesion[0, 9] = 1.0  # the image puts something at patch 9 only
    centering.eval()
    head = ProjectionHead(8, 8, hidden_dim=0, centering=centering)
    head.net = torch.nn.Identity()
    word = F.normalize(torch.ones(8), dim=0)
    # without centering the code decides where the word points; with it, the image does
    assert int((F.normalize(code + lesion, dim=-1) @ word).argmax()) != 9
    assert int((head(code + lesion) @ word).argmax()) == 9


def test_model_holds_the_buffer_and_needs_a_grid() -> None:
    model = SISTAModel(
        ViTImageEncoder(img_size=32, patch_size=8, preset="tiny"),
        HuggingFaceTextEncoder(config=SMALL_BERT),
        embed_dim=16,
        patch_centering=True,
    )
    assert model.state_dict()["image_local_head.centering.running_mean"].shape == (16, 16)
    ids = torch.randint(5, 100, (2, 6))
    out = model(torch.rand(2, 1, 32, 32), ids, torch.ones_like(ids))
    torch.testing.assert_close(out.patch_emb.norm(dim=-1), torch.ones(2, 16))
    assert not model.image_local_head.centering.running_mean.eq(0).all()  # updated in training
    plain = SISTAModel(
        ViTImageEncoder(img_size=32, patch_size=8, preset="tiny"), HuggingFaceTextEncoder(config=SMALL_BERT), 16
    )
    assert not any("centering" in k for k in plain.state_dict())
    no_grid = torch.nn.Module()
    no_grid.out_channels = 8
    with pytest.raises(ValueError, match="patch_grid"):
        SISTAModel(no_grid, HuggingFaceTextEncoder(config=SMALL_BERT), 16, patch_centering=True)
    with pytest.raises(ValueError, match="momentum"):
        PositionCentering(4, 4, momentum=0.0)
    with pytest.raises(ValueError, match="positions, width"):
        PositionCentering(4, 4)(torch.zeros(1, 5, 4))


def test_a_non_finite_batch_leaves_the_running_mean_as_it_was() -> None:
    """The trainer may skip a NaN batch (``nonfinite_loss: skip``); its mean must not poison every later batch."""
    centering = PositionCentering(2, 2, momentum=0.5)
    centering(torch.ones(3, 2, 2))
    before = centering.running_mean.clone()
    poisoned = torch.ones(3, 2, 2)
    poisoned[0, 1, 0] = float("nan")
    centering(poisoned)
    torch.testing.assert_close(centering.running_mean[0], torch.full((2,), 0.75))  # finite positions still update
    assert centering.running_mean[1, 0] == before[1, 0] and centering.running_mean[1, 1] == 0.75
    assert torch.isfinite(centering.running_mean).all()
