"""SIA's guard against rows that lose every negative (``min_negatives``) and its diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from sista_monai.losses import SemanticInstanceAlignmentLoss

# v_i = e_i and unit t_j, so with temperature 1 the logits are s_ij = <v_i, t_j> = T[j][i]:
#   s = [[0.6, 0.0, 0.8],
#        [0.8, 0.6, 0.0],
#        [0.0, 0.8, 0.6]]
IMAGES = torch.eye(3, dtype=torch.float64)
TEXTS = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8], [0.8, 0.0, 0.6]], dtype=torch.float64)
S = [[0.6, 0.0, 0.8], [0.8, 0.6, 0.0], [0.0, 0.8, 0.6]]
# row 0 flags both other reports (0.9 and 0.95 >= 0.5); rows 1 and 2 flag report 0 only
REPORT_SIM = torch.tensor([[1.0, 0.9, 0.95], [0.9, 1.0, 0.1], [0.95, 0.1, 1.0]], dtype=torch.float64)


def eliminate_loss(logits: list[list[float]], kept: list[list[int]]) -> float:
    """Symmetric InfoNCE by hand: row i of each direction over the columns ``kept[i]`` (which include i)."""
    image_to_text = [math.log(sum(math.exp(logits[i][j]) for j in kept[i])) - logits[i][i] for i in range(3)]
    text_to_image = [math.log(sum(math.exp(logits[j][i]) for j in kept[i])) - logits[i][i] for i in range(3)]
    return 0.5 * (sum(image_to_text) / 3 + sum(text_to_image) / 3)


def test_guard_restores_the_least_similar_flagged_column() -> None:
    out = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0)(IMAGES, TEXTS, REPORT_SIM)
    # row 0 gets back report 1 (R = 0.9 < 0.95); rows 1 and 2 keep their one negative and lose report 0
    kept = [[0, 1], [1, 2], [1, 2]]
    expected = eliminate_loss(S, kept)
    # written out: image->text rows  log(e^.6 + 1) - .6, log(e^.6 + 1) - .6, log(e^.8 + e^.6) - .6
    #              text->image rows  log(e^.6 + e^.8) - .6, log(e^.6 + e^.8) - .6, log(1 + e^.6) - .6
    a, b = math.log(math.exp(0.6) + 1) - 0.6, math.log(math.exp(0.8) + math.exp(0.6)) - 0.6
    assert expected == pytest.approx(0.5 * ((2 * a + b) / 3 + (2 * b + a) / 3), rel=1e-12)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-12)
    assert out["rows_without_negatives"].item() == 1.0
    assert out["false_negative_rate"].item() == pytest.approx(4 / 6)  # counted before the guard


def test_min_negatives_zero_is_the_unguarded_loss() -> None:
    images = IMAGES.clone().requires_grad_()
    out = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0, min_negatives=0)(images, TEXTS, REPORT_SIM)
    kept = [[0], [1, 2], [1, 2]]  # the fully flagged row keeps only its positive
    assert out["loss"].item() == pytest.approx(eliminate_loss(S, kept), rel=1e-12)
    assert out["rows_without_negatives"].item() == 1.0
    assert out["false_negative_rate"].item() == pytest.approx(4 / 6)
    # image 0 is seen only by its own row (and is excluded from the other rows): no gradient at all
    (grad,) = torch.autograd.grad(out["loss"], images)
    assert torch.equal(grad[0], torch.zeros(3, dtype=torch.float64))

    images = IMAGES.clone().requires_grad_()
    guarded = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0)(images, TEXTS, REPORT_SIM)
    (grad,) = torch.autograd.grad(guarded["loss"], images)
    assert grad[0].abs().max().item() > 1e-3


def test_a_fully_flagged_row_contributes_exactly_zero_without_the_guard() -> None:
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(3, 4, generator=generator), dim=1)
    texts = F.normalize(torch.randn(3, 4, generator=generator), dim=1)
    everything = torch.ones(3, 3)
    out = SemanticInstanceAlignmentLoss(threshold=0.5, min_negatives=0)(images, texts, everything)
    assert out["loss"].item() == 0.0
    assert out["rows_without_negatives"].item() == 3.0 and out["false_negative_rate"].item() == 1.0


def test_guard_breaks_ties_by_column_order_and_stops_at_the_row_size() -> None:
    everything = torch.ones(3, 3, dtype=torch.float64)
    one = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0)(IMAGES, TEXTS, everything)
    # all flagged with equal R: row 0 gets back column 1, rows 1 and 2 column 0
    assert one["loss"].item() == pytest.approx(eliminate_loss(S, [[0, 1], [0, 1], [0, 2]]), rel=1e-12)
    assert one["rows_without_negatives"].item() == 3.0

    plain = 0.5 * (
        F.cross_entropy(torch.tensor(S), torch.arange(3)) + F.cross_entropy(torch.tensor(S).T, torch.arange(3))
    )
    for min_negatives in (2, 5):  # every column back: the standard CLIP loss
        out = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0, min_negatives=min_negatives)(
            IMAGES, TEXTS, everything
        )
        assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-6)
        assert out["rows_without_negatives"].item() == 3.0

    # min_negatives = 2 with REPORT_SIM: rows 1 and 2 also get report 0 back (each had one negative)
    out = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0, min_negatives=2)(IMAGES, TEXTS, REPORT_SIM)
    assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-6)
    assert out["rows_without_negatives"].item() == 1.0  # counts rows with no negative at all


def test_nothing_flagged_is_the_plain_symmetric_infonce() -> None:
    generator = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=1)
    texts = F.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=1)
    sim = torch.rand(5, 5, generator=generator, dtype=torch.float64) * 0.5
    logits = images @ texts.T / 0.07
    targets = torch.arange(5)
    plain = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    for min_negatives in (0, 1, 3):
        out = SemanticInstanceAlignmentLoss(threshold=0.9, min_negatives=min_negatives)(images, texts, sim)
        torch.testing.assert_close(out["loss"], plain, rtol=1e-12, atol=1e-12)
        assert out["rows_without_negatives"].item() == 0.0 and out["false_negative_rate"].item() == 0.0


def test_guard_leaves_rows_with_enough_negatives_alone() -> None:
    # B = 4: row 0 flags columns 1 and 2 but keeps column 3, so min_negatives=1 changes nothing
    generator = torch.Generator().manual_seed(4)
    images = F.normalize(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=1)
    texts = F.normalize(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=1)
    sim = torch.eye(4, dtype=torch.float64)
    sim[0, 1] = sim[1, 0] = sim[0, 2] = sim[2, 0] = 0.8
    guarded = SemanticInstanceAlignmentLoss(threshold=0.5, min_negatives=1)(images, texts, sim)
    unguarded = SemanticInstanceAlignmentLoss(threshold=0.5, min_negatives=0)(images, texts, sim)
    assert torch.equal(guarded["loss"], unguarded["loss"])
    assert guarded["rows_without_negatives"].item() == 0.0
    assert guarded["false_negative_rate"].item() == pytest.approx(4 / 12)


def test_negative_min_negatives_raises() -> None:
    with pytest.raises(ValueError, match="min_negatives must be non-negative"):
        SemanticInstanceAlignmentLoss(threshold=0.5, min_negatives=-1)


def test_rows_without_negatives_is_an_eliminate_mode_count() -> None:
    everything = torch.ones(3, 3, dtype=torch.float64)
    for mode in ("positive", "soft"):  # every column stays in the denominator: nothing to warn about
        out = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=1.0, mode=mode)(IMAGES, TEXTS, everything)
        assert out["rows_without_negatives"].item() == 0.0 and out["false_negative_rate"].item() == 1.0
