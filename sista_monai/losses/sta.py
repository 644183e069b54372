"""STA: sparse token alignment between report words and image patches (METHOD.md §2), within each image–report
pair and, optionally, across the images of the global batch."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from sista_monai.distributed import world_info
from sista_monai.losses.distributed import all_reduce_sum_no_grad, gather_no_grad, gather_with_grad

__all__ = ["STA_CONTRASTS", "SparseTokenAlignmentLoss", "alignment_weights", "grouping_weights"]

STA_CONTRASTS = ("within", "cross", "both")
"""Values of ``SparseTokenAlignmentLoss(contrast=...)`` (config ``sta_contrast``): the within-pair term, the
cross-image term, or their sum."""

# _SIDE_COMPATIBLE[s, s']: a finding stated on side s and one stated on side s' may be the same finding
# (0 = unspecified or bilateral matches every side; right (1) and left (2) differ)
_SIDE_COMPATIBLE = ((True, True, True), (True, True, False), (True, False, True))


def grouping_weights(
    similarity: torch.Tensor, sparsity_threshold: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """STA's sparse grouping of word–patch similarities over the last dimension (METHOD.md §2, steps 2–4).

    Per row: min–max normalised over the last dimension (``+ eps`` in the denominator), values below ``sigma``
    zeroed, renormalised to sum 1; a row in which nothing survives falls back to uniform ``1 / P``. This is the
    one implementation of the grouping: :func:`alignment_weights` (the within-pair term, the metrics and heat
    maps) and the cross-image term of :class:`SparseTokenAlignmentLoss` both call it.

    Args:
        similarity: ``(..., P)`` word–patch similarities.
        sparsity_threshold: ``sigma``; ``None`` means ``1 / P``.
        eps: ``eps`` of the min–max normalisation.

    Returns:
        ``(..., P)`` non-negative weights whose rows sum to 1.
    """
    num_patches = similarity.shape[-1]
    sigma = 1.0 / num_patches if sparsity_threshold is None else sparsity_threshold
    row_min = similarity.amin(dim=-1, keepdim=True)
    row_max = similarity.amax(dim=-1, keepdim=True)
    normalised = (similarity - row_min) / (row_max - row_min + eps)
    kept = normalised * (normalised >= sigma)
    row_sum = kept.sum(dim=-1, keepdim=True)
    has_mass = row_sum > 0
    weights = kept / torch.where(has_mass, row_sum, torch.ones_like(row_sum))
    return torch.where(has_mass, weights, torch.full_like(weights, 1.0 / num_patches))


def alignment_weights(
    patch_emb: torch.Tensor, token_emb: torch.Tensor, sparsity_threshold: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Sparse word→patch weights ``a`` of STA (METHOD.md §2, steps 1–4 up to the renormalisation), per pair.

    ``S = W P^T``; per token, min–max normalised over patches (``+ eps`` in the denominator); values below
    ``sigma`` zeroed; rows renormalised to sum 1. A row in which nothing survives falls back to uniform
    ``1 / P``. The loss (:class:`SparseTokenAlignmentLoss`), the patches-kept metric, the heat maps and
    pretraining inference all call this one function (steps 2–4 are :func:`grouping_weights`).

    Args:
        patch_emb: ``(B, P, D)``.
        token_emb: ``(B, T, D)``.
        sparsity_threshold: ``sigma``; ``None`` means ``1 / P``.
        eps: ``eps`` of the min–max normalisation.

    Returns:
        ``(B, T, P)`` non-negative weights whose rows sum to 1 (padding tokens included; mask them yourself).
    """
    similarity = torch.einsum("btd,bpd->btp", token_emb, patch_emb)
    return grouping_weights(similarity, sparsity_threshold, eps)


def _cross_chunk_scores(
    words: torch.Tensor, patches: torch.Tensor, sparsity_threshold: float | None, eps: float, temperature: float
) -> torch.Tensor:
    """Scores ``<c_n^(m), w_n> / tau`` of ``N`` words against a chunk of ``M`` images: ``(N, D), (M, P, D) -> (N, M)``.

    The largest tensors are ``(M, N, P)`` (similarities and weights) and ``(M, N, D)`` (grouped embeddings).
    """
    similarity = torch.matmul(patches, words.transpose(0, 1)).transpose(1, 2)  # (M, N, P)
    weights = grouping_weights(similarity, sparsity_threshold, eps)
    grouped = F.normalize(torch.bmm(weights, patches), dim=-1)  # (M, N, D)
    return torch.einsum("mnd,nd->nm", grouped, words) / temperature


class SparseTokenAlignmentLoss(nn.Module):
    """Fine-grained word–patch InfoNCE through sparsified patch–word similarities, within pairs and across images.

    **Within-pair term** (``contrast="within"``, the default). For every pair ``i`` separately, with
    L2-normalised patch embeddings ``p_k`` (``P`` of them) and token embeddings ``w_j`` (``T`` of them, some
    invalid):

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

    The within-pair term alone can be solved without looking at the image: it only asks each word's grouped
    patches to differ from the other words' of the same report, which a position code shared by every image
    satisfies (METHOD.md §2).

    **Cross-image term** (``contrast="cross"``; ``"both"`` adds it to the within-pair term). It contrasts each
    *content word* against every image of the global batch (``B_g = B * world`` images), as GLoRIA's local loss
    contrasts words across images. A content word ``n`` is a valid token ``j`` of report ``i`` with
    ``content_words[i, j] = c >= 0`` (its finding class) and side ``s = content_sides[i, j]`` (0 unspecified or
    bilateral, 1 right, 2 left; 0 when no sides are given). For every image ``m`` of the global batch:

    1. ``S_k^(m) = <w_ij, p_mk>`` over the ``P`` patches of image ``m``;
    2. the within-pair sparse grouping of that row (steps 2–4 above, same ``sigma`` and ``eps``, same uniform
       fallback; :func:`grouping_weights`): weights ``a_k^(m)``;
    3. ``c_n^(m) = normalize(sum_k a_k^(m) p_mk)`` and ``score_nm = <c_n^(m), w_ij> / tau_tok``;
    4. denominator exclusion, SIA's idea at token level: an image ``m != i`` is left out of ``n``'s softmax when
       report ``m`` states the same finding in the same place, i.e. it has a content word ``j'`` with
       ``content_words[m, j'] = c`` and ``s = 0`` or ``content_sides[m, j'] = 0`` or ``content_sides[m, j'] = s``;
       the positive ``m = i`` is never left out;
    5. ``loss_n = -log( exp(score_ni) / sum_{m kept} exp(score_nm) )``.

    ``L_cross`` is one flat mean of ``loss_n`` over all content words of the global batch (not per sample). A word
    whose negatives are all left out contributes 0. If the global batch holds no content word, ``L_cross`` is a
    zero that still carries a ``grad_fn``. A position code gives ``c_n^(m) = c_n^(i)`` for every ``m`` (every
    image has the same patches), so every score of a word is equal and ``loss_n = log(#kept images)`` whatever the
    token embeddings: an image-free codebook cannot lower this term.

    The content words are flattened to ``(N, D)`` and scored against chunks of ``image_chunk_size`` images at a
    time (``(chunk, N, P)`` similarities, no loop over samples or words, never a ``(B, T, B_g, P)`` tensor). With
    ``checkpoint_chunks`` each chunk runs under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant) when
    gradients are needed, so backward also holds one chunk's ``O(N * chunk * P)`` intermediates at a time, at the
    price of recomputing the chunk's forward. Cost ``O(N * B_g * P * D)`` time with ``N ~ B * K`` (``K`` content
    words per report). The exclusion mask is read from a ``(B_g, C, 3)`` multi-hot tensor of the findings each
    report states (per class and side), indexed by the words' class and side.

    ``"both"`` returns ``L_within + L_cross``.

    Distributed: the within-pair term needs no gathering (it is per pair), but the number of samples with valid
    tokens is summed over ranks so that the mean over ranks equals the single-process mean over the global batch
    even when ranks hold different numbers of non-empty reports. The cross-image term gathers the patch
    embeddings with gradient and the content words and sides without; each rank scores its own content words
    against all ``B_g`` images (the positive at global index ``rank * B + i``) and multiplies the sum of its
    ``loss_n`` by ``world / N_g`` (``N_g`` the global number of content words), so that the mean of the per-rank
    losses is the single-process loss and DDP's gradient averaging gives the single-process gradient
    (:mod:`sista_monai.losses.distributed`).

    References:
        Bica, Ioana, et al. "Improving fine-grained understanding in image-text pre-training" (SPARC). ICML 2024
        (https://arxiv.org/abs/2401.09865): per-pair min–max normalised, thresholded patch–token similarities,
        language-grouped vision embeddings and a within-sample token-level InfoNCE; the cross-image term reuses
        this grouping against other images.

        Huang, Shih-Cheng, et al. "GLoRIA: A Multimodal Global-Local Representation Learning Framework for
        Label-efficient Medical Image Recognition." ICCV 2021: the local loss attends each word over an image's
        sub-regions and contrasts words across the images of the batch.

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
        contrast: str = "within",
        image_chunk_size: int | None = 32,
        checkpoint_chunks: bool = True,
        place_aware: bool = True,
    ) -> None:
        """
        Args:
            sparsity_threshold: ``sigma``, applied to the min–max normalised similarities; ``None`` means ``1 / P``.
            temperature: ``tau_tok`` of the token InfoNCE (both terms).
            eps: ``eps`` in the min–max normalisation denominator.
            sync_sample_count: when running distributed, sum the number of non-empty samples (within-pair term)
                and of content words (cross-image term) over ranks (one small all-reduce each) so that the
                per-rank losses average to the global-batch loss. Without it each rank normalises by its own
                counts (a mean of per-rank means).
            contrast: ``"within"`` (the within-pair term), ``"cross"`` (the cross-image term) or ``"both"``
                (their sum); see :data:`STA_CONTRASTS`.
            image_chunk_size: number of images scored at once by the cross-image term; ``None`` scores all the
                global batch's images at once.
            checkpoint_chunks: recompute each chunk of the cross-image term in backward
                (:func:`torch.utils.checkpoint.checkpoint`) instead of keeping its intermediates, when gradients
                are needed.
            place_aware: leave an image out of a content word's denominator only when its report states the same
                finding *on a compatible side* (the default); ``False`` ignores ``content_sides``, so any report
                stating the same finding class is left out.

        Raises:
            ValueError: when ``temperature`` or ``eps`` is not positive, ``sparsity_threshold`` is negative,
                ``contrast`` is not one of :data:`STA_CONTRASTS` or ``image_chunk_size`` is not a positive integer
                or ``None``.
        """
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        if sparsity_threshold is not None and sparsity_threshold < 0:
            raise ValueError(f"sparsity_threshold must be non-negative or None, got {sparsity_threshold}.")
        if contrast not in STA_CONTRASTS:
            raise ValueError(f"contrast must be one of {STA_CONTRASTS}, got {contrast!r}.")
        if image_chunk_size is not None and (
            isinstance(image_chunk_size, bool) or not isinstance(image_chunk_size, int) or image_chunk_size < 1
        ):
            raise ValueError(f"image_chunk_size must be a positive integer or None, got {image_chunk_size!r}.")
        self.sparsity_threshold = sparsity_threshold
        self.temperature = float(temperature)
        self.eps = float(eps)
        self.sync_sample_count = sync_sample_count
        self.contrast = contrast
        self.image_chunk_size = image_chunk_size
        self.checkpoint_chunks = bool(checkpoint_chunks)
        self.place_aware = bool(place_aware)

    def forward(
        self,
        patch_emb: torch.Tensor,
        token_emb: torch.Tensor,
        token_mask: torch.Tensor,
        return_weights: bool = False,
        token_groups: torch.Tensor | None = None,
        content_words: torch.Tensor | None = None,
        content_sides: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            patch_emb: ``(B, P, D)`` patch embeddings, L2-normalised.
            token_emb: ``(B, T, D)`` token embeddings, L2-normalised.
            token_mask: ``(B, T)`` boolean, ``True`` for valid tokens (not padding or special tokens).
            return_weights: also return the detached ``(B, T, P)`` within-pair alignment weights (zero rows for
                invalid tokens), e.g. for heat maps.
            token_groups: optional ``(B, T)`` integer word identity (``word_group`` of
                :class:`~sista_monai.transforms.TokenizeReportd`; negative values belong to no group). Two
                different valid tokens of one sample with the same group are the same word written twice (a
                FINDINGS word echoed in IMPRESSION): neither is a negative of the other, so each such pair is left
                out of both softmax denominators of the within-pair term (as SIA leaves out false negatives).
                Without it every other token is a negative.
            content_words: ``(B, T)`` integer finding class (``>= 0``) of each content word (the first piece of a
                positively stated finding word), ``-1`` (any negative value) for every other token; only valid
                tokens take part. Required by the cross-image term, ignored by the within-pair term.
            content_sides: optional ``(B, T)`` integer side of each content word: 0 unspecified or bilateral,
                1 right, 2 left (values at other tokens are ignored); ``None`` means 0 everywhere.

        Returns:
            A dict with ``"loss"`` (scalar, with gradient: the within-pair term, the cross-image term or their sum,
            following ``contrast``), the detached values of the computed terms ``"loss_within"`` and/or
            ``"loss_cross"``, ``"sparsity"`` (detached mean fraction of non-zero within-pair ``a_jk`` over valid
            tokens; NaN without valid tokens), with the cross-image term ``"content_words"`` (detached float
            number of content words of the global batch) and, with ``return_weights``, ``"weights"``.

        Raises:
            ValueError: when the shapes are inconsistent, ``token_mask`` is not boolean, or the cross-image term
                is computed and ``content_words`` is missing, not an integer ``(B, T)`` tensor, or
                ``content_sides`` is not an integer ``(B, T)`` tensor with values 0, 1 or 2 at the content words.
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
        if token_groups is not None and token_groups.shape != (batch, num_tokens):
            raise ValueError(
                f"token_groups must have shape (B, T) = ({batch}, {num_tokens}), got {tuple(token_groups.shape)}."
            )
        with_cross = self.contrast in ("cross", "both")
        if with_cross:
            sides = content_sides if self.place_aware else None
            word_classes, word_sides = self._content_inputs(token_mask, content_words, sides)

        output: dict[str, torch.Tensor] = {}
        terms: list[torch.Tensor] = []
        if self.contrast in ("within", "both"):
            weights = alignment_weights(patch_emb, token_emb, self.sparsity_threshold, self.eps)
            loss_within = self._within_term(patch_emb, token_emb, token_mask, token_groups, weights)
            terms.append(loss_within)
            output["loss_within"] = loss_within.detach()
        else:
            with torch.no_grad():
                weights = alignment_weights(patch_emb, token_emb, self.sparsity_threshold, self.eps)
        if with_cross:
            loss_cross, count = self._cross_term(patch_emb, token_emb, word_classes, word_sides)
            terms.append(loss_cross)
            output["loss_cross"] = loss_cross.detach()
            output["content_words"] = count.detach().float()

        with torch.no_grad():
            nonzero_fraction = (weights > 0).to(weights.dtype).mean(dim=2)
            sparsity = (nonzero_fraction * token_mask).sum() / token_mask.sum()
        output = {"loss": terms[0] if len(terms) == 1 else terms[0] + terms[1], **output, "sparsity": sparsity.float()}
        if return_weights:
            output["weights"] = (weights * token_mask[:, :, None]).detach()
        return output

    def _within_term(
        self,
        patch_emb: torch.Tensor,
        token_emb: torch.Tensor,
        token_mask: torch.Tensor,
        token_groups: torch.Tensor | None,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """The within-pair term (steps 4–5 and the mean over non-empty samples) from the alignment weights."""
        num_tokens = token_emb.shape[1]
        grouped = F.normalize(torch.bmm(weights, patch_emb), dim=2)

        logits = torch.bmm(grouped, token_emb.transpose(1, 2)) / self.temperature
        pair_mask = token_mask[:, :, None] & token_mask[:, None, :]
        if token_groups is not None:
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
        return (per_sample * non_empty).sum() / torch.where(num_samples > 0, num_samples, torch.ones_like(num_samples))

    def _content_inputs(
        self, token_mask: torch.Tensor, content_words: torch.Tensor | None, content_sides: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ``(B, T)`` long classes (``-1`` off the valid content words) and sides (0 off them)."""
        shape = tuple(token_mask.shape)
        if content_words is None:
            raise ValueError(
                f"contrast={self.contrast!r} needs content_words, a (B, T) integer tensor of finding classes "
                "(-1 for tokens that are not content words), got None."
            )
        for name, value in (("content_words", content_words), ("content_sides", content_sides)):
            if value is None:
                continue
            if tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape (B, T) = {shape}, got {tuple(value.shape)}.")
            if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
                raise ValueError(f"{name} must be an integer tensor, got dtype {value.dtype}.")
        content_words = content_words.to(token_mask.device)
        content = (content_words >= 0) & token_mask
        word_classes = torch.where(content, content_words.long(), torch.full_like(content_words, -1, dtype=torch.long))
        if content_sides is None:
            return word_classes, torch.zeros_like(word_classes)
        word_sides = torch.where(content, content_sides.to(token_mask.device).long(), torch.zeros_like(word_classes))
        if bool(((word_sides < 0) | (word_sides > 2)).any()):
            raise ValueError(
                "content_sides must be 0 (unspecified or bilateral), 1 (right) or 2 (left) at the content words, "
                f"got values {sorted(set(word_sides[content].tolist()) - {0, 1, 2})}."
            )
        return word_classes, word_sides

    def _cross_term(
        self, patch_emb: torch.Tensor, token_emb: torch.Tensor, word_classes: torch.Tensor, word_sides: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-image term and the global number of content words (see the class docstring)."""
        rank, world = world_info()
        batch = patch_emb.shape[0]
        # plain tensors: a MetaTensor subclass (MONAI's, carried from the image) cannot be gathered and sliced by rank
        patch_emb, token_emb = patch_emb.as_subclass(torch.Tensor), token_emb.as_subclass(torch.Tensor)
        all_patches = gather_with_grad(patch_emb)  # (B_g, P, D)
        all_words = gather_no_grad(torch.stack((word_classes, word_sides), dim=-1))  # (B_g, T, 2)
        num_images = all_patches.shape[0]

        # the findings each report of the global batch states: states[m, c, s] (class c on side s)
        all_classes, all_sides = all_words[..., 0], all_words[..., 1]
        report_index, token_index = torch.nonzero(all_classes >= 0, as_tuple=True)
        num_classes = int(all_classes.max().item()) + 1 if report_index.numel() > 0 else 0
        states = torch.zeros(num_images, num_classes, 3, dtype=torch.bool, device=all_words.device)
        states[report_index, all_classes[report_index, token_index], all_sides[report_index, token_index]] = True
        compatible = torch.tensor(_SIDE_COMPATIBLE, dtype=torch.float32, device=states.device)
        # states_any_side[m, c, s]: report m states class c on a side compatible with s
        states_any_side = torch.matmul(states.float(), compatible) > 0

        sample_index, token_index = torch.nonzero(word_classes >= 0, as_tuple=True)
        num_words = sample_index.numel()
        words = token_emb[sample_index, token_index]  # (N, D)
        positive = sample_index + rank * batch
        classes = word_classes[sample_index, token_index]
        sides = word_sides[sample_index, token_index]
        excluded = states_any_side[:, classes, sides].transpose(0, 1).contiguous()  # (N, B_g)
        word_range = torch.arange(num_words, device=excluded.device)
        excluded[word_range, positive] = False

        chunk_size = num_images if self.image_chunk_size is None else self.image_chunk_size
        score_chunk = partial(
            _cross_chunk_scores, sparsity_threshold=self.sparsity_threshold, eps=self.eps, temperature=self.temperature
        )
        use_checkpoint = (
            self.checkpoint_chunks and torch.is_grad_enabled() and (words.requires_grad or all_patches.requires_grad)
        )
        chunks = []
        for start in range(0, num_images, chunk_size):
            image_chunk = all_patches[start : start + chunk_size]
            if use_checkpoint:
                chunks.append(checkpoint(score_chunk, words, image_chunk, use_reentrant=False))
            else:
                chunks.append(score_chunk(words, image_chunk))
        scores = torch.cat(chunks, dim=1)  # (N, B_g)
        logits = scores.masked_fill(excluded, torch.finfo(scores.dtype).min)
        per_word = torch.logsumexp(logits, dim=1) - logits[word_range, positive]

        # counted in at least float32: half precision cannot hold every integer above 256 (bfloat16) or 2048
        count = torch.tensor(
            float(num_words), dtype=torch.promote_types(scores.dtype, torch.float32), device=scores.device
        )
        if self.sync_sample_count and world > 1:
            count = all_reduce_sum_no_grad(count)
            total = per_word.sum() * world
        else:
            total = per_word.sum()
        return total / torch.where(count > 0, count, torch.ones_like(count)), count

    def extra_repr(self) -> str:
        text = f"sparsity_threshold={self.sparsity_threshold}, temperature={self.temperature}, eps={self.eps}"
        if self.contrast != "within":
            text += f", contrast={self.contrast!r}, image_chunk_size={self.image_chunk_size}"
        return text
