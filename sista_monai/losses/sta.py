"""STA: sparse token alignment between report words and image patches, per image–report pair (METHOD.md §2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sista_monai.losses.distributed import all_reduce_sum_no_grad, world_info

__all__ = ["SparseTokenAlignmentLoss", "alignment_weights"]


def alignment_weights(
    patch_emb: torch.Tensor, token_emb: torch.Tensor, sparsity_threshold: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Sparse word→patch weights ``a`` of STA (METHOD.md §2, steps 1–4 up to the renormalisation), per pair.

    ``S = W P^T``; per token, min–max normalised over patches (``+ eps`` in the denominator); values below
    ``sigma`` zeroed; rows renormalised to sum 1. A row in which nothing survives falls back to uniform
    ``1 / P``. The loss (:class:`SparseTokenAlignmentLoss`), the patches-kept metric, the heat maps and
    pretraining inference all call this one function.

    Args:
        patch_emb: ``(B, P, D)``.
        token_emb: ``(B, T, D)``.
        sparsity_threshold: ``sigma``; ``None`` means ``1 / P``.
        eps: ``eps`` of the min–max normalisation.

    Returns:
        ``(B, T, P)`` non-negative weights whose rows sum to 1 (padding tokens included; mask them yourself).
    """
    num_patches = patch_emb.shape[1]
    sigma = 1.0 / num_patches if sparsity_threshold is None else sparsity_threshold
    similarity = torch.einsum("btd,bpd->btp", token_emb, patch_emb)
    row_min = similarity.amin(dim=2, keepdim=True)
    row_max = similarity.amax(dim=2, keepdim=True)
    normalised = (similarity - row_min) / (row_max - row_min + eps)
    kept = normalised * (normalised >= sigma)
    row_sum = kept.sum(dim=2, keepdim=True)
    has_mass = row_sum > 0
    weights = kept / torch.where(has_mass, row_sum, torch.ones_like(row_sum))
    return torch.where(has_mass, weights, torch.full_like(weights, 1.0 / num_patches))


class SparseTokenAlignmentLoss(nn.Module):
    """Fine-grained word–patch InfoNCE through sparsified, per-pair patch–word similarities.

    For every pair ``i`` separately (never across samples), with L2-normalised patch embeddings ``p_k``
    (``P`` of them) and token embeddings ``w_j`` (``T`` of them, some invalid):

    1. ``S = W P^T`` (``T x P``), token–patch cosine similarities;
    2. per token, min–max normalise over patches:
       ``S^_jk = (S_jk - min_k S_jk) / (max_k S_jk - min_k S_jk + eps)``;
    3. sparsify: keep ``S^_jk`` where ``S^_jk >= sigma`` (``sigma = 1 / P`` by default), zero elsewhere;
    4. renormalise each row to sum 1 (``a_jk``); the language-grouped visual embedding
       ``c_j = sum_k a_jk p_k`` is L2-normalised;
    5. symmetric InfoNCE inside the sample between ``{c_j}`` and ``{w_j}`` over its valid tokens, temperature
       ``tau_tok``: the mean of the ``c -> w`` and ``w -> c`` terms, each averaged over the valid tokens.

    The loss is the mean over samples with at least one valid token. A row in which nothing survives the
    sparsification (its maximum equals its minimum, so every ``S^_jk`` is 0, or ``sigma`` exceeds every value)
    falls back to uniform weights ``a_jk = 1 / P``: all patches are equally relevant to that token. A report with
    a single valid token contributes 0 (its softmax has one entry). Samples without valid tokens are left out of
    the mean; if no sample has a valid token the loss is a zero that still carries a ``grad_fn`` (when an input
    requires grad), so a training step never breaks.

    The computation is batched with masks: ``O(B * T * P * D)`` time and ``O(B * T * P)`` memory (the ``(B, T, P)``
    similarity and weights, plus ``(B, T, T)`` logits); there is no loop over samples or words and no cross-sample
    ``B^2 * T * P`` tensor.

    Distributed: no gathering is needed (the loss is per pair), but the number of samples with valid tokens is
    summed over ranks so that the mean over ranks equals the single-process mean over the global batch even when
    ranks hold different numbers of non-empty reports.

    References:
        Bica, Ioana, et al. "Improving fine-grained understanding in image-text pre-training" (SPARC). ICML 2024
        (https://arxiv.org/abs/2401.09865): per-pair min–max normalised, thresholded patch–token similarities,
        language-grouped vision embeddings and a within-sample token-level InfoNCE.

        Wang, Fuying, et al. "Multi-Granularity Cross-modal Alignment for Generalized Medical Visual
        Representation Learning" (MGCA). NeurIPS 2022 (https://arxiv.org/abs/2210.06044): token-wise
        cross-modal alignment for chest X-rays and reports.

        van den Oord, Aaron, et al. "Representation Learning with Contrastive Predictive Coding." 2018
        (https://arxiv.org/abs/1807.03748): InfoNCE.
    """

    def __init__(
        self,
        sparsity_threshold: float | None = None,
        temperature: float = 0.1,
        eps: float = 1e-6,
        sync_sample_count: bool = True,
    ) -> None:
        """
        Args:
            sparsity_threshold: ``sigma``, applied to the min–max normalised similarities; ``None`` means ``1 / P``.
            temperature: ``tau_tok`` of the within-sample token InfoNCE.
            eps: ``eps`` in the min–max normalisation denominator.
            sync_sample_count: when running distributed, sum the number of non-empty samples over ranks (one
                small all-reduce) so that the per-rank losses average to the global-batch loss.

        Raises:
            ValueError: when ``temperature`` or ``eps`` is not positive or ``sparsity_threshold`` is negative.
        """
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        if sparsity_threshold is not None and sparsity_threshold < 0:
            raise ValueError(f"sparsity_threshold must be non-negative or None, got {sparsity_threshold}.")
        self.sparsity_threshold = sparsity_threshold
        self.temperature = float(temperature)
        self.eps = float(eps)
        self.sync_sample_count = sync_sample_count

    def forward(
        self,
        patch_emb: torch.Tensor,
        token_emb: torch.Tensor,
        token_mask: torch.Tensor,
        return_weights: bool = False,
        token_groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            patch_emb: ``(B, P, D)`` patch embeddings, L2-normalised.
            token_emb: ``(B, T, D)`` token embeddings, L2-normalised.
            token_mask: ``(B, T)`` boolean, ``True`` for valid tokens (not padding or special tokens).
            token_groups: optional ``(B, T)`` integer word identity (``word_group`` of
                :class:`~sista_monai.transforms.TokenizeReportd`; negative values belong to no group). Two
                different valid tokens of one sample with the same group are the same word written twice (a
                FINDINGS word echoed in IMPRESSION): neither is a negative of the other, so each such pair is left
                out of both softmax denominators (as SIA leaves out false negatives). Without it every other
                token is a negative.
            return_weights: also return the detached ``(B, T, P)`` alignment weights (zero rows for invalid
                tokens), e.g. for heat maps.

        Returns:
            A dict with ``"loss"`` (scalar, with gradient), ``"sparsity"`` (detached mean fraction of non-zero
            ``a_jk`` over valid tokens; NaN without valid tokens) and, with ``return_weights``, ``"weights"``.

        Raises:
            ValueError: when the shapes are inconsistent or ``token_mask`` is not boolean.
        """
        if patch_emb.ndim != 3 or token_emb.ndim != 3:
            raise ValueError(
                f"patch_emb must have shape (B, P, D) and token_emb (B, T, D), got {tuple(patch_emb.shape)} "
                f"and {tuple(token_emb.shape)}."
            )
        batch, num_patches, dim = patch_emb.shape
        if token_emb.shape[0] != batch or token_emb.shape[2] != dim:
            raise ValueError(
                f"patch_emb {tuple(patch_emb.shape)} and token_emb {tuple(token_emb.shape)} must agree on B and D."
            )
        if num_patches == 0:
            raise ValueError("patch_emb must hold at least one patch, got P = 0.")
        num_tokens = token_emb.shape[1]
        if token_mask.shape != (batch, num_tokens):
            raise ValueError(
                f"token_mask must have shape (B, T) = ({batch}, {num_tokens}), got {tuple(token_mask.shape)}."
            )
        if token_mask.dtype != torch.bool:
            raise ValueError(f"token_mask must be a bool tensor, got dtype {token_mask.dtype}.")

        weights = alignment_weights(patch_emb, token_emb, self.sparsity_threshold, self.eps)
        grouped = F.normalize(torch.bmm(weights, patch_emb), dim=2)

        logits = torch.bmm(grouped, token_emb.transpose(1, 2)) / self.temperature
        pair_mask = token_mask[:, :, None] & token_mask[:, None, :]
        if token_groups is not None:
            if token_groups.shape != (batch, num_tokens):
                raise ValueError(
                    f"token_groups must have shape (B, T) = ({batch}, {num_tokens}), got {tuple(token_groups.shape)}."
                )
            same_word = (token_groups[:, :, None] == token_groups[:, None, :]) & (token_groups[:, :, None] >= 0)
            same_word &= ~torch.eye(num_tokens, dtype=torch.bool, device=token_groups.device)
            pair_mask = pair_mask & ~same_word
        logits = logits.masked_fill(~pair_mask, torch.finfo(logits.dtype).min)
        positives = torch.diagonal(logits, dim1=1, dim2=2)
        grouped_to_word = torch.logsumexp(logits, dim=2) - positives
        word_to_grouped = torch.logsumexp(logits, dim=1) - positives
        per_token = 0.5 * (grouped_to_word + word_to_grouped) * token_mask

        valid_count = token_mask.sum(dim=1)
        non_empty = valid_count > 0
        per_sample = per_token.sum(dim=1) / valid_count.clamp_min(1)
        num_samples = non_empty.sum().to(per_sample.dtype)
        if self.sync_sample_count and world_info()[1] > 1:
            num_samples = all_reduce_sum_no_grad(num_samples) / world_info()[1]
        loss = (per_sample * non_empty).sum() / torch.where(num_samples > 0, num_samples, torch.ones_like(num_samples))

        with torch.no_grad():
            nonzero_fraction = (weights > 0).to(weights.dtype).mean(dim=2)
            sparsity = (nonzero_fraction * token_mask).sum() / token_mask.sum()
        output = {"loss": loss, "sparsity": sparsity.float()}
        if return_weights:
            output["weights"] = (weights * token_mask[:, :, None]).detach()
        return output

    def extra_repr(self) -> str:
        return f"sparsity_threshold={self.sparsity_threshold}, temperature={self.temperature}, eps={self.eps}"
