"""Tests of the sparse token alignment (STA) loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sista_monai.losses import SparseTokenAlignmentLoss, alignment_weights


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operator produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.numel = max(self.numel, item.numel())
        return out


def loop_reference(
    patches: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | None = None,
    temperature: float = 0.1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """METHOD.md §2 written word by word and sample by sample."""
    sample_losses = []
    for b in range(patches.shape[0]):
        valid = [j for j in range(tokens.shape[1]) if mask[b, j]]
        if not valid:
            continue
        num_patches = patches.shape[1]
        threshold = 1.0 / num_patches if sigma is None else sigma
        grouped = []
        for j in valid:
            similarity = torch.stack([tokens[b, j] @ patches[b, k] for k in range(num_patches)])
            normalised = (similarity - similarity.min()) / (similarity.max() - similarity.min() + eps)
            kept = torch.where(normalised >= threshold, normalised, torch.zeros_like(normalised))
            if kept.sum() > 0:
                weights = kept / kept.sum()
            else:
                weights = torch.full_like(kept, 1.0 / num_patches)
            vector = sum(weights[k] * patches[b, k] for k in range(num_patches))
            grouped.append(vector / vector.norm().clamp_min(1e-12))
        words = [tokens[b, j] for j in valid]
        terms = []
        for a in range(len(valid)):
            row = torch.stack([grouped[a] @ words[k] for k in range(len(valid))]) / temperature
            column = torch.stack([grouped[k] @ words[a] for k in range(len(valid))]) / temperature
            terms.append(0.5 * ((torch.logsumexp(row, 0) - row[a]) + (torch.logsumexp(column, 0) - column[a])))
        sample_losses.append(torch.stack(terms).mean())
    return torch.stack(sample_losses).mean()


def random_inputs(batch: int = 4, patches: int = 6, tokens: int = 5, dim: int = 4, dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    patch_emb = F.normalize(torch.randn(batch, patches, dim, generator=generator, dtype=dtype), dim=-1)
    token_emb = F.normalize(torch.randn(batch, tokens, dim, generator=generator, dtype=dtype), dim=-1)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    return patch_emb, token_emb, mask


def test_known_answer() -> None:
    # sample 1: patches (1, 0), (0, 1), (-1, 0); words (1, 0), (0, 1) and a padding token
    #   word 1: S = [1, 0, -1] -> S^ ≈ [1, 1/2, 0], sigma = 1/3 keeps two -> a = [2/3, 1/3, 0], c = (2, 1) / √5
    #   word 2: S = [0, 1, 0] -> S^ = [0, 1, 0] -> a = [0, 1, 0], c = (0, 1)
    # sample 2: a single valid token -> loss 0
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]] * 2)
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = SparseTokenAlignmentLoss(temperature=1.0)(patches, tokens, mask, return_weights=True)
    r5 = 1 / math.sqrt(5)
    # logits c_j . w_k = [[2/√5, 1/√5], [0, 1]]
    rows = [math.log(math.exp(2 * r5) + math.exp(r5)) - 2 * r5, math.log(1 + math.e) - 1]
    columns = [math.log(math.exp(2 * r5) + 1) - 2 * r5, math.log(math.exp(r5) + math.e) - 1]
    sample_1 = 0.5 * (sum(rows) / 2 + sum(columns) / 2)
    assert out["loss"].item() == pytest.approx((sample_1 + 0.0) / 2, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.2006048, abs=1e-6)
    # non-zero fractions: 2/3 and 1/3 (sample 1), 1/3 (sample 2: S = [0, 1, 0])
    assert out["sparsity"].item() == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    expected_weights = torch.tensor(
        [[[2 / 3, 1 / 3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0], [0.0] * 3, [0.0] * 3]]
    )
    torch.testing.assert_close(out["weights"], expected_weights, atol=1e-6, rtol=0)


def test_matches_loop_reference_values_and_gradients() -> None:
    patch_emb, token_emb, mask = random_inputs(batch=5, patches=7, tokens=6, dim=5)
    mask[0, 4:] = False  # padding
    mask[1, 1:] = False  # one valid token
    mask[2] = False  # no valid token: left out of the mean
    mask[3, ::2] = False  # holes
    # sample 4, word 0 has max == min: patches live in the first 4 dimensions, the word is e_5
    patch_emb[4, :, 4] = 0
    patch_emb[4] = F.normalize(patch_emb[4], dim=-1)
    token_emb[4, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    patch_emb.requires_grad_()
    token_emb.requires_grad_()
    loss = SparseTokenAlignmentLoss(temperature=0.2)
    out = loss(patch_emb, token_emb, mask, return_weights=True)
    expected = loop_reference(patch_emb, token_emb, mask, temperature=0.2)
    torch.testing.assert_close(out["loss"], expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["weights"][4, 0], torch.full((7,), 1 / 7, dtype=torch.float64))
    grads = torch.autograd.grad(out["loss"], (patch_emb, token_emb))
    expected_grads = torch.autograd.grad(expected, (patch_emb, token_emb))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    assert grads[1][2].abs().max().item() == 0.0  # the empty report receives no gradient


@pytest.mark.parametrize("sigma", [None, 0.0, 0.5])
def test_matches_loop_reference_for_sparsity_thresholds(sigma: float | None) -> None:
    patch_emb, token_emb, mask = random_inputs(batch=3, patches=5, tokens=4, dim=3)
    mask[1, 3] = False
    out = SparseTokenAlignmentLoss(sparsity_threshold=sigma)(patch_emb, token_emb, mask)
    torch.testing.assert_close(out["loss"], loop_reference(patch_emb, token_emb, mask, sigma=sigma))


def test_sparsity_threshold_controls_kept_fraction() -> None:
    patch_emb, token_emb, mask = random_inputs(batch=2, patches=8, tokens=3, dim=4)
    keep_all = SparseTokenAlignmentLoss(sparsity_threshold=0.0)(patch_emb, token_emb, mask)
    # with sigma = 0 every patch but the minimum keeps a non-zero weight
    assert keep_all["sparsity"].item() == pytest.approx(7 / 8)
    only_max = SparseTokenAlignmentLoss(sparsity_threshold=1.0 - 1e-3)(patch_emb, token_emb, mask)
    assert only_max["sparsity"].item() == pytest.approx(1 / 8)


def test_gradcheck() -> None:
    patch_emb, token_emb, mask = random_inputs(batch=2, patches=4, tokens=3, dim=3)
    mask[1, 2] = False
    patch_emb.requires_grad_()
    token_emb.requires_grad_()
    loss = SparseTokenAlignmentLoss(temperature=0.5)
    assert torch.autograd.gradcheck(lambda p, w: loss(p, w, mask)["loss"], (patch_emb, token_emb))


def test_all_reports_empty_gives_zero_loss_with_grad() -> None:
    patch_emb, token_emb, mask = random_inputs(batch=2, patches=3, tokens=2, dim=2, dtype=torch.float32)
    patch_emb.requires_grad_()
    out = SparseTokenAlignmentLoss()(patch_emb, token_emb, torch.zeros_like(mask))
    assert out["loss"].item() == 0.0
    assert out["loss"].grad_fn is not None
    out["loss"].backward()
    assert torch.equal(patch_emb.grad, torch.zeros_like(patch_emb))
    assert math.isnan(out["sparsity"].item())


def test_one_valid_token_gives_zero_loss() -> None:
    patch_emb, token_emb, mask = random_inputs(batch=1, patches=3, tokens=4, dim=2, dtype=torch.float32)
    mask[0, 1:] = False
    out = SparseTokenAlignmentLoss()(patch_emb, token_emb, mask)
    assert out["loss"].item() == 0.0
    assert torch.isfinite(out["loss"])


def test_identical_patches_fall_back_to_uniform_weights() -> None:
    patches = torch.tensor([[[0.6, 0.8]] * 4])
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    out = SparseTokenAlignmentLoss()(patches, tokens, torch.ones(1, 2, dtype=torch.bool), return_weights=True)
    torch.testing.assert_close(out["weights"], torch.full((1, 2, 4), 0.25))
    assert out["sparsity"].item() == 1.0
    assert torch.isfinite(out["loss"])


def test_no_cross_sample_interaction() -> None:
    patch_emb, token_emb, mask = random_inputs(batch=3, patches=5, tokens=4, dim=3)
    loss = SparseTokenAlignmentLoss()
    batch_loss = loss(patch_emb, token_emb, mask)["loss"]
    single = [loss(patch_emb[i : i + 1], token_emb[i : i + 1], mask[i : i + 1])["loss"] for i in range(3)]
    torch.testing.assert_close(batch_loss, torch.stack(single).mean())


def test_memory_is_per_pair_and_op_count_independent_of_batch() -> None:
    counts = {}
    for batch in (3, 6):
        patch_emb, token_emb, mask = random_inputs(batch=batch, patches=7, tokens=5, dim=3)
        patch_emb.requires_grad_()
        mask[0, 2:] = False
        with LargestTensor() as tracker:
            SparseTokenAlignmentLoss()(patch_emb, token_emb, mask)["loss"].backward()
        # the (B, T, P) similarity is the largest tensor: nothing of size B^2 * T * P
        assert tracker.numel == batch * 5 * 7
        counts[batch] = tracker.calls
    assert counts[3] == counts[6]  # no Python loop over samples or words


@pytest.mark.parametrize(
    ("patches", "tokens", "mask", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4, 3), torch.ones(2, 4, dtype=torch.bool), r"\(B, P, D\)"),
        (torch.zeros(2, 5, 3), torch.zeros(3, 4, 3), torch.ones(3, 4, dtype=torch.bool), "must agree on B and D"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 4, 2), torch.ones(2, 4, dtype=torch.bool), "must agree on B and D"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 4, 3), torch.ones(2, 3, dtype=torch.bool), r"= \(2, 4\), got \(2, 3\)"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 4, 3), torch.ones(2, 4), "must be a bool tensor"),
    ],
)
def test_shape_errors(patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SparseTokenAlignmentLoss()(patches, tokens, mask)


def test_alignment_weights_function_is_the_losss() -> None:
    """The one alignment-weights function: METHOD.md §2 steps 1–4 word by word, and what the loss aligns with."""
    torch.manual_seed(3)
    patch_emb = F.normalize(torch.randn(2, 6, 4, dtype=torch.float64), dim=-1)
    token_emb = F.normalize(torch.randn(2, 3, 4, dtype=torch.float64), dim=-1)
    token_emb[1, 2] = 0.0  # a row whose similarities are all equal: uniform fallback
    mask = torch.tensor([[True, True, False], [True, True, True]])
    for sigma in (None, 0.5, 0.0):
        weights = alignment_weights(patch_emb, token_emb, sigma)
        threshold = 1 / 6 if sigma is None else sigma
        for b in range(2):
            for j in range(3):
                similarity = torch.stack([token_emb[b, j] @ patch_emb[b, k] for k in range(6)])
                normalised = (similarity - similarity.min()) / (similarity.max() - similarity.min() + 1e-6)
                kept = torch.where(normalised >= threshold, normalised, torch.zeros_like(normalised))
                expected = kept / kept.sum() if kept.sum() > 0 else torch.full_like(kept, 1 / 6)
                torch.testing.assert_close(weights[b, j], expected, rtol=1e-12, atol=1e-12)
        out = SparseTokenAlignmentLoss(sparsity_threshold=sigma)(patch_emb, token_emb, mask, return_weights=True)
        torch.testing.assert_close(out["weights"], weights * mask[:, :, None], rtol=0, atol=0)
    torch.testing.assert_close(weights[1, 2], torch.full((6,), 1 / 6, dtype=torch.float64))
