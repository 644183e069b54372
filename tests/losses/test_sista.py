"""Tests of the combined SISTA loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from sista_monai.losses import ReportSimilarity, SemanticInstanceAlignmentLoss, SISTALoss, SparseTokenAlignmentLoss


def make_inputs(batch: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1)

    reports = unit(batch, 6)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return {
        "image_emb": unit(batch, 8).requires_grad_(),
        "text_emb": unit(batch, 8).requires_grad_(),
        "report_sim": ReportSimilarity("text_frozen")(reports),
        "patch_emb": unit(batch, 9, 8).requires_grad_(),
        "token_emb": unit(batch, 5, 8).requires_grad_(),
        "token_mask": mask,
    }


def test_weighted_sum_of_terms_and_diagnostics() -> None:
    inputs = make_inputs()
    sia = SemanticInstanceAlignmentLoss(threshold=0.3, mode="eliminate")
    sta = SparseTokenAlignmentLoss()
    out = SISTALoss(sia, sta, lambda_instance=0.7, lambda_token=2.5)(**inputs)
    sia_out = sia(inputs["image_emb"], inputs["text_emb"], inputs["report_sim"])
    sta_out = sta(inputs["patch_emb"], inputs["token_emb"], inputs["token_mask"])
    torch.testing.assert_close(out["loss"], 0.7 * sia_out["loss"] + 2.5 * sta_out["loss"])
    torch.testing.assert_close(out["loss_sia"], sia_out["loss"].detach())
    torch.testing.assert_close(out["loss_sta"], sta_out["loss"].detach())
    assert set(out) == {
        "loss",
        "loss_sia",
        "loss_sta",
        "false_negative_rate",
        "rows_without_negatives",
        "temperature",
        "sparsity",
    }
    assert out["false_negative_rate"].item() > 0
    assert out["loss"].requires_grad
    assert all(not value.requires_grad for key, value in out.items() if key != "loss")
    out["loss"].backward()
    assert all(inputs[name].grad is not None for name in ("image_emb", "text_emb", "patch_emb", "token_emb"))


def test_zero_weight_term_is_not_computed() -> None:
    inputs = make_inputs()

    class Exploding(SparseTokenAlignmentLoss):
        def forward(self, *args, **kwargs):
            raise AssertionError("STA must not be computed when lambda_token = 0")

    sia = SemanticInstanceAlignmentLoss(threshold=0.3)
    out = SISTALoss(sia, Exploding(), lambda_token=0.0)(
        image_emb=inputs["image_emb"], text_emb=inputs["text_emb"], report_sim=inputs["report_sim"]
    )
    torch.testing.assert_close(out["loss"], sia(inputs["image_emb"], inputs["text_emb"], inputs["report_sim"])["loss"])
    assert out["loss_sta"].item() == 0.0 and "sparsity" not in out

    token_only = SISTALoss(None, SparseTokenAlignmentLoss(), lambda_instance=0.0)
    out = token_only(patch_emb=inputs["patch_emb"], token_emb=inputs["token_emb"], token_mask=inputs["token_mask"])
    assert out["loss_sia"].item() == 0.0 and "false_negative_rate" not in out
    torch.testing.assert_close(out["loss"].detach(), out["loss_sta"])


def test_label_agreement_and_weights_are_passed_through() -> None:
    inputs = make_inputs()
    agreement = torch.eye(4, dtype=torch.bool)
    out = SISTALoss(SemanticInstanceAlignmentLoss(threshold=0.3))(
        **inputs, label_agreement=agreement, return_weights=True
    )
    assert out["flag_precision"].item() == 0.0
    assert out["weights"].shape == (4, 5, 9)


def test_errors() -> None:
    with pytest.raises(ValueError, match="sia .* is required"):
        SISTALoss(None)
    with pytest.raises(ValueError, match="at least one"):
        SISTALoss(SemanticInstanceAlignmentLoss(threshold=0.3), lambda_instance=0.0, lambda_token=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        SISTALoss(SemanticInstanceAlignmentLoss(threshold=0.3), lambda_token=-1.0)
    with pytest.raises(ValueError, match="patch_emb, token_emb, token_mask required"):
        inputs = make_inputs()
        SISTALoss(SemanticInstanceAlignmentLoss(threshold=0.3))(
            image_emb=inputs["image_emb"], text_emb=inputs["text_emb"], report_sim=inputs["report_sim"]
        )


def test_shuffled_pairs_control_aligns_words_with_the_next_image() -> None:
    """``sta_pairs="shuffled"``: STA on mismatched pairs (report i with image i - 1), SIA on the true pairs."""
    inputs = make_inputs()
    sia = SemanticInstanceAlignmentLoss(threshold=0.3)
    sta = SparseTokenAlignmentLoss(contrast="both")
    content = torch.full((4, 5), -1, dtype=torch.long)
    content[:, 1] = torch.tensor([0, 1, 0, 2])
    shuffled = SISTALoss(sia, sta, sta_pairs="shuffled")(**inputs, content_words=content)
    matched = SISTALoss(sia, sta)(**inputs, content_words=content)
    rolled = sta(inputs["patch_emb"].roll(1, dims=0), inputs["token_emb"], inputs["token_mask"], content_words=content)
    torch.testing.assert_close(shuffled["loss_sta"], rolled["loss"].detach())
    torch.testing.assert_close(shuffled["loss_sia"], matched["loss_sia"])
    assert not torch.allclose(shuffled["loss_sta"], matched["loss_sta"])
    with pytest.raises(ValueError, match="sta_pairs"):
        SISTALoss(sia, sta, sta_pairs="random")
