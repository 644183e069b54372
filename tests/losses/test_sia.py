"""Tests of the SIA loss and of the report–report similarity it thresholds."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from sista_monai.losses import (
    SIA_MODES,
    ReportSimilarity,
    SemanticInstanceAlignmentLoss,
    false_negative_flags,
    finding_label_agreement,
)

E = math.e

# Three pairs, D = 2, tau = 1 so that the logits s = V T^T are small integers:
#   s = [[1, 0, 1],
#        [0, 1, 0],
#        [0, 1, 0]]
# Reports 2 and 3 are similar (R = 0.9 >= theta = 0.5): pairs (2, 3) and (3, 2) are flagged.
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
TEXTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
REPORT_SIM = torch.tensor([[1.0, 0.1, 0.2], [0.1, 1.0, 0.9], [0.2, 0.9, 1.0]])


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Plain symmetric CLIP/InfoNCE loss."""
    logits = image_emb @ text_emb.T / temperature
    targets = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def random_unit(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def test_eliminate_known_answer() -> None:
    loss = SemanticInstanceAlignmentLoss(threshold=0.5, mode="eliminate", temperature=1.0)
    out = loss(IMAGES, TEXTS, REPORT_SIM)
    # image -> text rows: row 2 drops column 3, row 3 drops column 2
    rows = [math.log(2 * E + 1) - 1, math.log(1 + E) - 1, math.log(2)]
    # text -> image columns [1, 0, 0], [0, 1, 1], [1, 0, 0]: column 2 drops image 3, column 3 drops image 2
    columns = [math.log(E + 2) - 1, math.log(1 + E) - 1, math.log(E + 1)]
    expected = 0.5 * (sum(rows) / 3 + sum(columns) / 3)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.6743953, abs=1e-6)
    assert out["false_negative_rate"].item() == pytest.approx(2 / 6)
    assert out["temperature"].item() == pytest.approx(1.0)


def test_positive_known_answer() -> None:
    loss = SemanticInstanceAlignmentLoss(threshold=0.5, mode="positive", temperature=1.0)
    out = loss(IMAGES, TEXTS, REPORT_SIM)
    # rows 2 and 3 ([0, 1, 0]) have positives {2, 3} with logits 1 and 0: log(2 + e) - 1/2
    rows = [math.log(2 * E + 1) - 1, math.log(2 + E) - 0.5, math.log(2 + E) - 0.5]
    # column 2 ([0, 1, 1]) has positives 1 and 1; column 3 ([1, 0, 0]) has positives {3, 2} with logits 0, 0
    columns = [math.log(E + 2) - 1, math.log(1 + 2 * E) - 1, math.log(E + 2)]
    expected = 0.5 * (sum(rows) / 3 + sum(columns) / 3)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.9882947, abs=1e-6)


def test_soft_known_answer() -> None:
    # image 3 turned to (1, 0): s = [[1, 0, 1], [0, 1, 0], [1, 0, 1]], so every positive logit is 1
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    loss = SemanticInstanceAlignmentLoss(threshold=0.5, mode="soft", temperature=1.0, soft_temperature=0.1)
    out = loss(images, TEXTS, REPORT_SIM)
    # targets over {i} ∪ flagged ∝ exp(R / 0.1): self e^10, partner e^9 -> e / (e + 1) and 1 / (e + 1);
    # the partner's logit is 0 in rows/columns 2 and 3, so only the self target contributes to <q, s>
    q_self = E / (E + 1)
    rows = [math.log(2 * E + 1) - 1, math.log(2 + E) - q_self, math.log(2 * E + 1) - q_self]
    columns = [math.log(2 * E + 1) - 1, math.log(2 + E) - q_self, math.log(2 * E + 1) - q_self]
    expected = 0.5 * (sum(rows) / 3 + sum(columns) / 3)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    positive = SemanticInstanceAlignmentLoss(threshold=0.5, mode="positive", temperature=1.0)(images, TEXTS, REPORT_SIM)
    assert positive["loss"].item() == pytest.approx(expected + (q_self - 0.5) * 4 / 6, rel=1e-6)


def test_soft_threshold_minus_inf_is_softmax_of_whole_row() -> None:
    torch.manual_seed(1)
    v, t = random_unit(4, 3), random_unit(4, 3)
    report = random_unit(4, 5)
    sim = report @ report.T
    out = SemanticInstanceAlignmentLoss(float("-inf"), mode="soft", temperature=0.5, soft_temperature=0.2)(v, t, sim)
    logits = v @ t.T / 0.5
    targets = torch.softmax(sim / 0.2, dim=1)
    expected = 0.5 * (
        -(targets * F.log_softmax(logits, 1)).sum(1).mean() - (targets * F.log_softmax(logits.T, 1)).sum(1).mean()
    )
    torch.testing.assert_close(out["loss"], expected)
    assert out["false_negative_rate"].item() == 1.0


@pytest.mark.parametrize("mode", SIA_MODES)
def test_threshold_above_similarities_equals_clip(mode: str) -> None:
    torch.manual_seed(0)
    v, t = random_unit(6, 8), random_unit(6, 8)
    report = random_unit(6, 4)
    sim = report @ report.T
    off_diagonal_max = sim.masked_fill(torch.eye(6, dtype=torch.bool), -2).max().item()
    loss = SemanticInstanceAlignmentLoss(threshold=off_diagonal_max + 1e-3, mode=mode, temperature=0.07)
    out = loss(v, t, sim)
    torch.testing.assert_close(out["loss"], clip_loss(v, t, 0.07), rtol=1e-12, atol=1e-12)
    assert out["false_negative_rate"].item() == 0.0
    flagged = SemanticInstanceAlignmentLoss(threshold=off_diagonal_max - 1e-3, mode=mode, temperature=0.07)(v, t, sim)
    assert not torch.allclose(flagged["loss"], out["loss"])


@pytest.mark.parametrize("mode", SIA_MODES)
def test_gradcheck(mode: str) -> None:
    torch.manual_seed(2)
    v = random_unit(4, 3).requires_grad_()
    t = random_unit(4, 3).requires_grad_()
    sim = torch.tensor(
        [[1.0, 0.8, 0.1, 0.0], [0.8, 1.0, 0.2, 0.7], [0.1, 0.2, 1.0, 0.3], [0.0, 0.7, 0.3, 1.0]], dtype=torch.float64
    )
    loss = SemanticInstanceAlignmentLoss(threshold=0.6, mode=mode, temperature=0.5, soft_temperature=0.3)
    assert loss(v, t, sim)["false_negative_rate"].item() == pytest.approx(4 / 12)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, sim)["loss"], (v, t))


def test_temperature_argument_replaces_the_fixed_one_and_takes_gradient() -> None:
    loss = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=0.07)
    tau = torch.tensor(0.5, requires_grad=True)
    out = loss(IMAGES, TEXTS, REPORT_SIM, temperature=tau)
    assert out["temperature"].item() == pytest.approx(0.5)
    expected = SemanticInstanceAlignmentLoss(threshold=0.5, temperature=0.5)(IMAGES, TEXTS, REPORT_SIM)["loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    # eliminate mode, (2, 3) and (3, 2) flagged; s = V T^T = [[1, 0, 1], [0, 1, 0], [0, 1, 0]]. Each anchor's kept
    # logits (values of s) and its positive: d CE / d tau = (s_pos - E_softmax(s / tau)[s]) / tau^2; mean of 6 anchors.
    anchors = [
        ([1.0, 0.0, 1.0], 1.0),  # image 1: reports 1, 2, 3
        ([0.0, 1.0], 1.0),  # image 2: reports 1, 2 (3 flagged)
        ([0.0, 0.0], 0.0),  # image 3: reports 1, 3 (2 flagged)
        ([1.0, 0.0, 0.0], 1.0),  # report 1: images 1, 2, 3
        ([0.0, 1.0], 1.0),  # report 2: images 1, 2 (3 flagged)
        ([1.0, 0.0], 0.0),  # report 3: images 1, 3 (2 flagged)
    ]
    expected_grad = 0.0
    for values, positive in anchors:
        row = torch.tensor(values, dtype=torch.float64)
        expected_grad += (positive - (torch.softmax(row / 0.5, dim=0) * row).sum().item()) / 0.25 / 6
    assert tau.grad.item() == pytest.approx(expected_grad, rel=1e-5)
    assert loss(IMAGES, TEXTS, REPORT_SIM)["temperature"].item() == pytest.approx(0.07)


def test_learnable_temperature_on_the_loss_is_refused() -> None:
    with pytest.raises(ValueError, match=r"lives in the model: set SISTAModel\(learnable_temperature=True"):
        SemanticInstanceAlignmentLoss(threshold=0.5, learnable_temperature=True)
    # the other constructor arguments of the former learnable path keep working
    loss = SemanticInstanceAlignmentLoss(threshold=0.5, learnable_temperature=False, temperature_bounds=(0.05, 0.5))
    assert loss.temperature == pytest.approx(0.07)


def test_false_negative_flags_rule() -> None:
    sim = torch.tensor(
        [[1.0, 0.8, 0.2, 0.8], [0.8, 0.3, 0.7, 0.69], [0.2, 0.7, 1.0, 0.1]]
    )  # 3 anchors against 4 reports
    flags = false_negative_flags(sim, 0.7)
    assert flags.tolist() == [
        [False, True, False, True],
        [True, False, True, False],
        [False, True, False, False],
    ]
    # a rank's local rows sit at columns first_column + i of the gathered matrix
    assert false_negative_flags(sim, 0.7, first_column=1).tolist() == [
        [True, False, False, True],
        [True, False, False, False],
        [False, True, True, False],
    ]
    # what both former call sites computed: (R >= theta) & ~one_hot(targets) in SIA, (R >= theta) & ~eye in the metric
    square = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    expected = (square >= 0.5) & ~torch.eye(5, dtype=torch.bool)
    assert torch.equal(false_negative_flags(square, 0.5), expected)
    targets = torch.arange(2) + 2
    local = square[:2].repeat(1, 2)[:, :4]
    expected_local = (local >= 0.5) & ~F.one_hot(targets, 4).bool()
    assert torch.equal(false_negative_flags(local, 0.5, first_column=2), expected_local)
    out = SemanticInstanceAlignmentLoss(threshold=0.5)(IMAGES, TEXTS, REPORT_SIM)
    assert out["false_negative_rate"].item() == pytest.approx(false_negative_flags(REPORT_SIM, 0.5).sum().item() / 6)


def test_fixed_temperature_has_no_parameter() -> None:
    assert list(SemanticInstanceAlignmentLoss(threshold=0.5).parameters()) == []


def test_flag_precision_and_recall() -> None:
    agreement = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    out = SemanticInstanceAlignmentLoss(threshold=0.5)(IMAGES, TEXTS, REPORT_SIM, label_agreement=agreement)
    # flagged: (2, 3) and (3, 2); agreeing off-diagonal: (1, 2) and (2, 3)
    assert out["flag_precision"].item() == pytest.approx(0.5)
    assert out["flag_recall"].item() == pytest.approx(0.5)
    none_flagged = SemanticInstanceAlignmentLoss(threshold=0.95)(IMAGES, TEXTS, REPORT_SIM, label_agreement=agreement)
    assert math.isnan(none_flagged["flag_precision"].item())
    assert "flag_precision" not in SemanticInstanceAlignmentLoss(threshold=0.5)(IMAGES, TEXTS, REPORT_SIM)


def test_no_gradient_into_report_similarity() -> None:
    images = IMAGES.clone().requires_grad_()
    sim = REPORT_SIM.clone().requires_grad_()
    out = SemanticInstanceAlignmentLoss(threshold=0.5, mode="soft")(images, TEXTS, sim)
    out["loss"].backward()
    assert images.grad is not None
    assert sim.grad is None


@pytest.mark.parametrize(
    ("images", "texts", "sim", "message"),
    [
        (torch.zeros(3, 2, 1), torch.zeros(3, 2), torch.zeros(3, 3), r"must have shape \(B, D\)"),
        (torch.zeros(3, 2), torch.zeros(2, 2), torch.zeros(3, 3), r"must have the same shape"),
        (torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 4), r"report_sim must have shape .* = \(3, 3\)"),
    ],
)
def test_shape_errors(images: torch.Tensor, texts: torch.Tensor, sim: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SemanticInstanceAlignmentLoss(threshold=0.5)(images, texts, sim)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        SemanticInstanceAlignmentLoss(threshold=0.5, mode="hard")
    with pytest.raises(ValueError, match="temperature_bounds must satisfy"):
        SemanticInstanceAlignmentLoss(threshold=0.5, temperature_bounds=(0.5, 0.1))
    with pytest.raises(ValueError, match="temperature must be positive"):
        SemanticInstanceAlignmentLoss(threshold=0.5, temperature=0.0)


def test_report_similarity_text_is_detached_cosine() -> None:
    features = torch.tensor([[3.0, 4.0], [4.0, 3.0], [0.0, 2.0]], requires_grad=True)
    sim = ReportSimilarity("text_online")(features)
    expected = torch.tensor([[1.0, 0.96, 0.8], [0.96, 1.0, 0.6], [0.8, 0.6, 1.0]])
    torch.testing.assert_close(sim, expected)
    assert not sim.requires_grad


def test_report_similarity_labels_zero_rows() -> None:
    labels = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
    sim = ReportSimilarity("labels")(labels)
    root_half = 1 / math.sqrt(2)
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0, root_half],
            [0.0, 1.0, 1.0, 0.0],  # two reports without findings agree
            [0.0, 1.0, 1.0, 0.0],
            [root_half, 0.0, 0.0, 1.0],
        ]
    )
    torch.testing.assert_close(sim, expected)
    agreement = finding_label_agreement(labels)
    assert agreement.tolist() == [
        [True, False, False, False],
        [False, True, True, False],
        [False, True, True, False],
        [False, False, False, True],
    ]


def test_report_similarity_errors() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        ReportSimilarity("images")
    with pytest.raises(ValueError, match=r"report_features must have shape \(B, F\)"):
        ReportSimilarity("labels")(torch.zeros(4))
