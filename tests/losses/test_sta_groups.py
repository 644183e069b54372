"""STA with word groups: a word written twice is not a negative of itself (``token_groups``)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from sista_monai.losses import SparseTokenAlignmentLoss


def grouped_loop_reference(
    patches: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    groups: list[list[int]] | None,
    sigma: float | None = None,
    temperature: float = 0.1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The class docstring's formula, sample by sample and token by token, with same-word pairs left out."""
    sample_losses = []
    num_patches = patches.shape[1]
    threshold = 1.0 / num_patches if sigma is None else sigma
    for b in range(patches.shape[0]):
        valid = [j for j in range(tokens.shape[1]) if bool(mask[b, j])]
        if not valid:
            continue
        grouped = {}
        for j in valid:
            similarity = [tokens[b, j] @ patches[b, k] for k in range(num_patches)]
            low, high = min(similarity), max(similarity)
            normalised = [(s - low) / (high - low + eps) for s in similarity]
            kept = [s if s >= threshold else 0.0 * s for s in normalised]
            total = sum(kept)
            weights = [s / total for s in kept] if total > 0 else [1.0 / num_patches] * num_patches
            vector = sum(weights[k] * patches[b, k] for k in range(num_patches))
            grouped[j] = vector / vector.norm()

        def same_word(j: int, k: int, b: int = b) -> bool:
            return groups is not None and j != k and groups[b][j] >= 0 and groups[b][j] == groups[b][k]

        terms = []
        for j in valid:
            others = [k for k in valid if not same_word(j, k)]
            row = torch.stack([grouped[j] @ tokens[b, k] for k in others]) / temperature
            column = torch.stack([grouped[k] @ tokens[b, j] for k in others]) / temperature
            positive = others.index(j)
            terms.append(
                0.5 * ((torch.logsumexp(row, 0) - row[positive]) + (torch.logsumexp(column, 0) - column[positive]))
            )
        sample_losses.append(sum(terms) / len(terms))
    return sum(sample_losses) / len(sample_losses)


def random_inputs(batch: int, patches: int, tokens: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    patch_emb = F.normalize(torch.randn(batch, patches, dim, generator=generator, dtype=torch.float64), dim=-1)
    token_emb = F.normalize(torch.randn(batch, tokens, dim, generator=generator, dtype=torch.float64), dim=-1)
    return patch_emb, token_emb


GROUPS = [
    [1, 2, 1, 4, 1, -1, -1],  # word at 1 written three times (tokens 0, 2, 4); token 6 invalid
    [0, 0, 2, 3, 3, 5, 6],  # two pairs; token 1 is invalid, so the pair (0, 1) is moot
    [-1, -1, 2, 3, 4, 5, 6],  # -1 twice: no group, every other token a negative
    [7, 7, 7, 7, 7, 7, 7],  # every valid token the same word
    [0, 1, 2, 3, 4, 5, 6],  # all distinct
]


@pytest.mark.parametrize("sigma", [None, 0.3])
def test_matches_loop_reference_with_repeated_groups(sigma: float | None) -> None:
    patch_emb, token_emb = random_inputs(batch=5, patches=6, tokens=7, dim=5)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[0, 6] = False
    mask[1, 1] = False
    mask[3, 5:] = False
    mask[4, 3:] = False
    groups = torch.tensor(GROUPS)
    patch_emb.requires_grad_()
    token_emb.requires_grad_()
    loss = SparseTokenAlignmentLoss(sparsity_threshold=sigma, temperature=0.2)
    out = loss(patch_emb, token_emb, mask, token_groups=groups)["loss"]
    expected = grouped_loop_reference(patch_emb, token_emb, mask, GROUPS, sigma=sigma, temperature=0.2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out, (patch_emb, token_emb))
    expected_grads = torch.autograd.grad(expected, (patch_emb, token_emb))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    # the groups change the loss: leaving same-word pairs out is not a no-op here
    ungrouped = loss(patch_emb, token_emb, mask)["loss"]
    torch.testing.assert_close(ungrouped, grouped_loop_reference(patch_emb, token_emb, mask, None, sigma, 0.2))
    assert abs(ungrouped.item() - out.item()) > 1e-3


def test_distinct_or_negative_groups_leave_the_loss_unchanged() -> None:
    patch_emb, token_emb = random_inputs(batch=3, patches=5, tokens=4, dim=3, seed=1)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True], [True, False, True, True]])
    loss = SparseTokenAlignmentLoss()
    plain = loss(patch_emb, token_emb, mask)["loss"]
    distinct = torch.arange(4).expand(3, 4)
    negative = torch.full((3, 4), -1)
    # a group shared only with an invalid token leaves no valid pair out either
    with_invalid = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 3], [0, 0, 2, 3]])
    for groups in (distinct, negative, with_invalid, torch.tensor([[5, 6, 7, 8]] * 3)):
        assert torch.equal(loss(patch_emb, token_emb, mask, token_groups=groups)["loss"], plain)


def test_two_tokens_of_one_word_give_zero_loss() -> None:
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss = SparseTokenAlignmentLoss(temperature=1.0)
    # each token's denominator holds only its positive: log(exp(s) / exp(s)) = 0 exactly
    assert loss(patches, tokens, mask, token_groups=torch.tensor([[3, 3]]))["loss"].item() == 0.0
    # with separate groups the known answer of tests/losses/test_sta.py: c = ((2, 1)/√5, (0, 1))
    assert loss(patches, tokens, mask, token_groups=torch.tensor([[3, 4]]))["loss"].item() == pytest.approx(
        0.4012096, abs=1e-6
    )


def test_three_tokens_hand_computed() -> None:
    # patches e1, e2, -e1; tokens e1, e2, e1 (the word e1 written twice, tokens 0 and 2), temperature 1
    # c_0 = c_2 = (2, 1)/√5, c_1 = (0, 1); logits L[j][k] = c_j . w_k
    import math

    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], dtype=torch.float64)
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = SparseTokenAlignmentLoss(temperature=1.0)(patches, tokens, mask, token_groups=torch.tensor([[0, 1, 0]]))
    r = 1 / math.sqrt(5)
    logits = [[2 * r, r, 2 * r], [0.0, 1.0, 0.0], [2 * r, r, 2 * r]]
    allowed = [[0, 1], [0, 1, 2], [1, 2]]  # token 0 and token 2 are not each other's negatives

    def term(j: int) -> float:
        row = math.log(sum(math.exp(logits[j][k]) for k in allowed[j])) - logits[j][j]
        column = math.log(sum(math.exp(logits[k][j]) for k in allowed[j])) - logits[j][j]
        return 0.5 * (row + column)

    expected = sum(term(j) for j in range(3)) / 3
    assert out["loss"].item() == pytest.approx(expected, rel=1e-9)


def test_token_groups_shape_error() -> None:
    patch_emb, token_emb = random_inputs(batch=2, patches=3, tokens=4, dim=2)
    with pytest.raises(ValueError, match=r"token_groups must have shape \(B, T\) = \(2, 4\), got \(2, 3\)"):
        SparseTokenAlignmentLoss()(
            patch_emb, token_emb, torch.ones(2, 4, dtype=torch.bool), token_groups=torch.zeros(2, 3)
        )
