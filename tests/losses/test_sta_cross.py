"""STA's cross-image term (``contrast="cross" | "both"``): content words contrasted against every image."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import sista_monai.losses.sta as sta_module
from sista_monai.losses import (
    STA_CONTRASTS,
    ReportSimilarity,
    SemanticInstanceAlignmentLoss,
    SISTALoss,
    SparseTokenAlignmentLoss,
)


def stated_findings(words: torch.Tensor, sides: torch.Tensor, mask: torch.Tensor, m: int) -> list[tuple[int, int]]:
    """(class, side) of every content word of report ``m``."""
    return [
        (int(words[m, j]), int(sides[m, j]))
        for j in range(words.shape[1])
        if bool(mask[m, j]) and int(words[m, j]) >= 0
    ]


def is_excluded(c: int, s: int, i: int, m: int, words: torch.Tensor, sides: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether image ``m`` leaves the denominator of a content word (class ``c``, side ``s``) of report ``i``."""
    if m == i:
        return False
    return any(c2 == c and (s == 0 or s2 == 0 or s2 == s) for c2, s2 in stated_findings(words, sides, mask, m))


def cross_loop_reference(
    patches: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    words: torch.Tensor,
    sides: torch.Tensor | None = None,
    sigma: float | None = None,
    temperature: float = 0.1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The cross-image term word by word and image by image (METHOD.md §2, the class docstring)."""
    batch, num_patches = patches.shape[:2]
    if sides is None:
        sides = torch.zeros_like(words)
    threshold = 1.0 / num_patches if sigma is None else sigma
    losses = []
    for i in range(batch):
        for j in range(tokens.shape[1]):
            if not (bool(mask[i, j]) and int(words[i, j]) >= 0):
                continue
            c, s, w = int(words[i, j]), int(sides[i, j]), tokens[i, j]
            scores, positive = [], None
            for m in range(batch):
                if is_excluded(c, s, i, m, words, sides, mask):
                    continue
                similarity = [w @ patches[m, k] for k in range(num_patches)]
                low, high = min(similarity), max(similarity)
                normalised = [(value - low) / (high - low + eps) for value in similarity]
                kept = [value if value >= threshold else 0.0 * value for value in normalised]
                total = sum(kept)
                weights = [value / total for value in kept] if total > 0 else [1.0 / num_patches] * num_patches
                vector = sum(weights[k] * patches[m, k] for k in range(num_patches))
                if m == i:
                    positive = len(scores)
                scores.append((vector / vector.norm()) @ w / temperature)
            row = torch.stack(scores)
            losses.append(torch.logsumexp(row, 0) - row[positive])
    if not losses:
        return 0.0 * (patches.sum() + tokens.sum())
    return sum(losses) / len(losses)


def random_embeddings(batch: int, patches: int, tokens: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    patch_emb = F.normalize(torch.randn(batch, patches, dim, generator=generator, dtype=torch.float64), dim=-1)
    token_emb = F.normalize(torch.randn(batch, tokens, dim, generator=generator, dtype=torch.float64), dim=-1)
    return patch_emb, token_emb


# six reports of seven tokens: (class, side) per token, -1 = not a content word
WORDS = torch.tensor(
    [
        [0, -1, 1, -1, 2, -1, -1],  # 0: class 0 right, class 1 unspecified, class 2 left; token 6 padding
        [-1, 0, -1, 1, -1, 0, -1],  # 1: class 0 right (as report 0), class 1 left; token 5 (class 0 left) padding
        [0, 3, -1, -1, -1, -1, -1],  # 2: class 0 left: a different place from reports 0 and 1
        [-1, -1, -1, -1, -1, -1, -1],  # 3: no content word
        [2, 2, 1, -1, -1, -1, -1],  # 4: class 2 unspecified and right, class 1 right
        [4, 0, -1, -1, -1, -1, -1],  # 5: class 4 only (the class 0 token is padding)
    ]
)
SIDES = torch.tensor(
    [
        [1, 0, 0, 0, 2, 0, 0],
        [0, 1, 0, 2, 0, 2, 0],
        [2, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
)
MASK = torch.tensor(
    [
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
    ],
    dtype=torch.bool,
)


def test_exclusions_of_the_test_batch() -> None:
    """The batch of the reference tests triggers every rule: same place, other side, unspecified side, padding."""
    assert is_excluded(0, 1, 0, 1, WORDS, SIDES, MASK)  # class 0 right in reports 0 and 1
    assert is_excluded(0, 1, 1, 0, WORDS, SIDES, MASK)
    assert not is_excluded(0, 2, 2, 0, WORDS, SIDES, MASK)  # class 0 left vs right: a negative
    assert not is_excluded(0, 2, 2, 1, WORDS, SIDES, MASK)  # report 1's class 0 left is padding
    assert is_excluded(1, 2, 1, 0, WORDS, SIDES, MASK)  # report 0 states class 1 without a side
    assert is_excluded(1, 0, 0, 4, WORDS, SIDES, MASK)  # an unspecified word matches any side
    assert not is_excluded(1, 2, 1, 4, WORDS, SIDES, MASK)  # left vs right
    assert is_excluded(2, 2, 0, 4, WORDS, SIDES, MASK)  # report 4 states class 2 without a side
    assert not is_excluded(4, 0, 5, 1, WORDS, SIDES, MASK)  # class 4 is nowhere else
    assert not is_excluded(0, 1, 0, 0, WORDS, SIDES, MASK)  # never the positive


@pytest.mark.parametrize("contrast", ["cross", "both"])
@pytest.mark.parametrize("sigma", [None, 0.4])
def test_matches_loop_reference_values_and_gradients(contrast: str, sigma: float | None) -> None:
    patch_emb, token_emb = random_embeddings(batch=6, patches=5, tokens=7, dim=4)
    # report 2, word 0: every patch equally similar (max == min), the uniform fallback
    patch_emb[2, :, 3] = 0
    patch_emb[2] = F.normalize(patch_emb[2], dim=-1)
    token_emb[2, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    patch_emb.requires_grad_()
    token_emb.requires_grad_()
    expected = cross_loop_reference(patch_emb, token_emb, MASK, WORDS, SIDES, sigma=sigma, temperature=0.2)
    expected_grads = torch.autograd.grad(expected, (patch_emb, token_emb))
    within = SparseTokenAlignmentLoss(sparsity_threshold=sigma, temperature=0.2)(patch_emb, token_emb, MASK)["loss"]
    within_grads = torch.autograd.grad(within, (patch_emb, token_emb))
    if contrast == "both":
        expected_grads = tuple(a + b for a, b in zip(expected_grads, within_grads, strict=True))

    results = {}
    for chunk in (1, 3, None):
        for use_checkpoint in (True, False):
            loss = SparseTokenAlignmentLoss(
                sparsity_threshold=sigma,
                temperature=0.2,
                contrast=contrast,
                image_chunk_size=chunk,
                checkpoint_chunks=use_checkpoint,
            )
            out = loss(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES)
            torch.testing.assert_close(out["loss_cross"], expected.detach(), rtol=1e-5, atol=1e-5)
            total = expected + within if contrast == "both" else expected
            torch.testing.assert_close(out["loss"], total, rtol=1e-5, atol=1e-5)
            assert out["content_words"].item() == 11.0  # 3 + 2 + 2 + 0 + 3 + 1 (padding left out)
            assert ("loss_within" in out) == (contrast == "both")
            grads = torch.autograd.grad(out["loss"], (patch_emb, token_emb))
            for grad, expected_grad in zip(grads, expected_grads, strict=True):
                torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)
            results[(chunk, use_checkpoint)] = (out["loss"].detach(), *grads)
    # chunking and checkpointing change nothing
    first = results[(1, True)]
    for other in results.values():
        for a, b in zip(first, other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the exclusions matter: without sides every class-0 word shares its finding with reports 0, 1 and 2
    without_sides = SparseTokenAlignmentLoss(sparsity_threshold=sigma, temperature=0.2, contrast="cross")(
        patch_emb, token_emb, MASK, content_words=WORDS
    )["loss"]
    expected_without_sides = cross_loop_reference(patch_emb, token_emb, MASK, WORDS, None, sigma, 0.2)
    torch.testing.assert_close(without_sides, expected_without_sides, rtol=1e-5, atol=1e-5)
    assert abs(without_sides.item() - expected.item()) > 1e-3
    # and with no exclusion at all (every word its own class) the loss is different again
    distinct = torch.where(WORDS >= 0, torch.arange(WORDS.numel()).reshape(WORDS.shape), WORDS)
    no_exclusion = SparseTokenAlignmentLoss(sparsity_threshold=sigma, temperature=0.2, contrast="cross")(
        patch_emb, token_emb, MASK, content_words=distinct
    )["loss"]
    torch.testing.assert_close(
        no_exclusion, cross_loop_reference(patch_emb, token_emb, MASK, distinct, None, sigma, 0.2)
    )
    assert abs(no_exclusion.item() - expected.item()) > 1e-3


def test_gradcheck() -> None:
    patch_emb, token_emb = random_embeddings(batch=3, patches=4, tokens=3, dim=3, seed=2)
    words = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 2, 0]])
    sides = torch.tensor([[1, 0, 0], [0, 2, 0], [0, 0, 1]])
    mask = torch.ones(3, 3, dtype=torch.bool)
    patch_emb.requires_grad_()
    token_emb.requires_grad_()
    loss = SparseTokenAlignmentLoss(temperature=0.5, contrast="cross", image_chunk_size=2)
    assert torch.autograd.gradcheck(
        lambda p, w: loss(p, w, mask, content_words=words, content_sides=sides)["loss"], (patch_emb, token_emb)
    )


def test_known_answer() -> None:
    # image 0: patches e1, e2; image 1: patches e2, -e1; word of report 0 = e1 (class 0), of report 1 = e2
    #   e1 vs image 0: S = [1, 0] -> a = [1, 0] -> c = e1, score 1; vs image 1: S = [0, -1] -> c = e2, score 0
    #   e2 vs image 0: S = [0, 1] -> c = e2, score 1; vs image 1 (positive): S = [1, 0] -> c = e2, score 1
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [-1.0, 0.0]]], dtype=torch.float64)
    tokens = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss = SparseTokenAlignmentLoss(temperature=1.0, contrast="cross")
    expected = 0.5 * (math.log(1 + math.exp(-1)) + math.log(2))
    out = loss(patches, tokens, mask, content_words=torch.tensor([[0], [1]]))
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert out["content_words"].item() == 2.0
    # the same class on both sides of the body: still each other's negatives
    sides = torch.tensor([[1], [2]])
    assert loss(patches, tokens, mask, content_words=torch.tensor([[0], [0]]), content_sides=sides)[
        "loss"
    ].item() == pytest.approx(expected, abs=1e-6)
    # the same finding in the same place: every negative is left out, each softmax has one entry
    for sides in (None, torch.tensor([[1], [1]]), torch.tensor([[0], [2]])):
        out = loss(patches, tokens, mask, content_words=torch.tensor([[0], [0]]), content_sides=sides)
        assert out["loss"].item() == 0.0
    # identical images: every score of a word is equal, loss = log(number of images in the denominator)
    same = patches[:1].expand(2, 2, 2)
    assert loss(same, tokens, mask, content_words=torch.tensor([[0], [1]]))["loss"].item() == pytest.approx(
        math.log(2), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_image_free_codes_cannot_lower_the_cross_term(seed: int) -> None:
    """Every image with the same patches (a position code): loss = mean log(#kept images), no gradient to words."""
    patch_emb, token_emb = random_embeddings(batch=6, patches=5, tokens=7, dim=4, seed=seed)
    shared = patch_emb[:1].expand(6, 5, 4).clone()
    token_emb.requires_grad_()
    out = SparseTokenAlignmentLoss(temperature=0.1, contrast="cross", image_chunk_size=4)(
        shared, token_emb, MASK, content_words=WORDS, content_sides=SIDES
    )
    kept = []
    for i in range(6):
        for c, s in stated_findings(WORDS, SIDES, MASK, i):
            kept.append(sum(not is_excluded(c, s, i, m, WORDS, SIDES, MASK) for m in range(6)))
    assert len(kept) == 11 and min(kept) < 6  # some images are left out
    expected = sum(math.log(count) for count in kept) / len(kept)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-10)
    (grad,) = torch.autograd.grad(out["loss"], token_emb)
    assert grad.abs().max().item() < 1e-12
    # with the images' own patches the words do receive a gradient
    own = SparseTokenAlignmentLoss(temperature=0.1, contrast="cross")(
        patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES
    )["loss"]
    assert torch.autograd.grad(own, token_emb)[0].abs().max().item() > 1e-3


def previous_within_loss(
    patch_emb: torch.Tensor,
    token_emb: torch.Tensor,
    token_mask: torch.Tensor,
    token_groups: torch.Tensor | None = None,
    sigma: float | None = None,
    temperature: float = 0.1,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The vectorised within-pair code as it was before the cross-image term (loss, sparsity, weights)."""
    num_patches = patch_emb.shape[1]
    threshold = 1.0 / num_patches if sigma is None else sigma
    similarity = torch.einsum("btd,bpd->btp", token_emb, patch_emb)
    row_min = similarity.amin(dim=2, keepdim=True)
    row_max = similarity.amax(dim=2, keepdim=True)
    normalised = (similarity - row_min) / (row_max - row_min + eps)
    kept = normalised * (normalised >= threshold)
    row_sum = kept.sum(dim=2, keepdim=True)
    has_mass = row_sum > 0
    weights = kept / torch.where(has_mass, row_sum, torch.ones_like(row_sum))
    weights = torch.where(has_mass, weights, torch.full_like(weights, 1.0 / num_patches))
    grouped = F.normalize(torch.bmm(weights, patch_emb), dim=2)
    logits = torch.bmm(grouped, token_emb.transpose(1, 2)) / temperature
    pair_mask = token_mask[:, :, None] & token_mask[:, None, :]
    if token_groups is not None:
        same_word = (token_groups[:, :, None] == token_groups[:, None, :]) & (token_groups[:, :, None] >= 0)
        same_word &= ~torch.eye(token_emb.shape[1], dtype=torch.bool)
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
    loss = (per_sample * non_empty).sum() / torch.where(num_samples > 0, num_samples, torch.ones_like(num_samples))
    nonzero_fraction = (weights > 0).to(weights.dtype).mean(dim=2)
    sparsity = (nonzero_fraction * token_mask).sum() / token_mask.sum()
    return loss, sparsity, weights * token_mask[:, :, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_groups", [False, True])
def test_within_is_unchanged(dtype: torch.dtype, with_groups: bool) -> None:
    patch_emb, token_emb = random_embeddings(batch=6, patches=5, tokens=7, dim=4, seed=3)
    patch_emb, token_emb = patch_emb.to(dtype), token_emb.to(dtype)
    groups = torch.tensor([[0, 1, 0, 2, 3, 4, 5]] * 6) if with_groups else None
    old_loss, old_sparsity, old_weights = previous_within_loss(patch_emb, token_emb, MASK, groups, temperature=0.2)
    outputs = [
        SparseTokenAlignmentLoss(temperature=0.2)(patch_emb, token_emb, MASK, True, groups),
        SparseTokenAlignmentLoss(temperature=0.2, contrast="within")(
            patch_emb, token_emb, MASK, True, groups, content_words=WORDS
        ),
    ]
    for out in outputs:
        assert set(out) == {"loss", "loss_within", "sparsity", "weights"}
        assert torch.equal(out["loss"], old_loss) and torch.equal(out["loss_within"], old_loss)
        assert torch.equal(out["sparsity"], old_sparsity.float()) and torch.equal(out["weights"], old_weights)
    both = SparseTokenAlignmentLoss(temperature=0.2, contrast="both")(
        patch_emb, token_emb, MASK, True, groups, content_words=WORDS, content_sides=SIDES
    )
    cross = SparseTokenAlignmentLoss(temperature=0.2, contrast="cross")(
        patch_emb, token_emb, MASK, True, groups, content_words=WORDS, content_sides=SIDES
    )
    assert torch.equal(both["loss_within"], old_loss)
    assert torch.equal(both["loss"], old_loss + both["loss_cross"])
    assert torch.equal(cross["loss"], both["loss_cross"]) and "loss_within" not in cross
    for out in (both, cross):  # the diagnostic and the heat-map weights are the within-pair ones in every mode
        assert torch.equal(out["sparsity"], old_sparsity.float()) and torch.equal(out["weights"], old_weights)


def test_no_content_word_gives_zero_with_grad() -> None:
    patch_emb, token_emb = random_embeddings(batch=3, patches=4, tokens=5, dim=3)
    patch_emb.requires_grad_()
    token_emb.requires_grad_()
    words = torch.full((3, 5), -1)
    words[1, 4] = 2  # a content word on a padding token does not count
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 4] = False
    out = SparseTokenAlignmentLoss(contrast="cross")(patch_emb, token_emb, mask, content_words=words)
    assert out["loss"].item() == 0.0 and out["content_words"].item() == 0.0
    assert out["loss"].grad_fn is not None
    out["loss"].backward()
    assert torch.equal(patch_emb.grad, torch.zeros_like(patch_emb))
    assert torch.equal(token_emb.grad, torch.zeros_like(token_emb))
    both = SparseTokenAlignmentLoss(contrast="both")(patch_emb, token_emb, mask, content_words=words)
    assert both["loss_cross"].item() == 0.0 and both["loss"].item() == both["loss_within"].item() > 0


def test_chunks_are_checkpointed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``checkpoint_chunks`` each chunk's forward is recomputed in backward rather than kept."""
    calls = []
    original = sta_module._cross_chunk_scores

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(sta_module, "_cross_chunk_scores", counting)
    patch_emb, token_emb = random_embeddings(batch=6, patches=5, tokens=7, dim=4)
    patch_emb.requires_grad_()
    for use_checkpoint, expected in ((True, [4, 2, 4, 2]), (False, [4, 2])):
        calls.clear()
        loss = SparseTokenAlignmentLoss(contrast="cross", image_chunk_size=4, checkpoint_chunks=use_checkpoint)
        loss(patch_emb, token_emb, MASK, content_words=WORDS)["loss"].backward()
        assert sorted(calls, reverse=True) == sorted(expected, reverse=True)
    calls.clear()
    with torch.no_grad():
        SparseTokenAlignmentLoss(contrast="cross", image_chunk_size=4)(patch_emb, token_emb, MASK, content_words=WORDS)
    assert calls == [4, 2]


def test_sista_loss_passes_content_words_and_reports_the_terms() -> None:
    patch_emb, token_emb = random_embeddings(batch=6, patches=5, tokens=7, dim=4)
    generator = torch.Generator().manual_seed(5)
    image_emb = F.normalize(torch.randn(6, 4, generator=generator, dtype=torch.float64), dim=-1)
    text_emb = F.normalize(torch.randn(6, 4, generator=generator, dtype=torch.float64), dim=-1)
    report_sim = ReportSimilarity("text_online")(text_emb)
    sia = SemanticInstanceAlignmentLoss(threshold=0.9)
    sta = SparseTokenAlignmentLoss(contrast="both")
    inputs = {
        "image_emb": image_emb,
        "text_emb": text_emb,
        "report_sim": report_sim,
        "patch_emb": patch_emb,
        "token_emb": token_emb,
        "token_mask": MASK,
    }
    out = SISTALoss(sia, sta, lambda_token=0.5)(**inputs, content_words=WORDS, content_sides=SIDES)
    direct = sta(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES)
    assert torch.equal(out["loss_sta_within"], direct["loss_within"])
    assert torch.equal(out["loss_sta_cross"], direct["loss_cross"])
    assert out["sta_content_words"].item() == 11.0
    assert torch.equal(out["loss_sta"], direct["loss"])
    torch.testing.assert_close(out["loss"], out["loss_sia"] + 0.5 * direct["loss"])
    assert not {"loss_within", "loss_cross", "content_words"} & set(out)
    assert all(not value.requires_grad for key, value in out.items() if key != "loss")
    # the within-pair term alone: "loss_sta" is that term, and no new key appears
    within = SISTALoss(sia, SparseTokenAlignmentLoss())(**inputs)
    assert not {"loss_sta_within", "loss_sta_cross", "sta_content_words", "loss_within"} & set(within)
    cross = SISTALoss(sia, SparseTokenAlignmentLoss(contrast="cross"))(**inputs, content_words=WORDS)
    assert "loss_sta_within" not in cross and torch.equal(cross["loss_sta_cross"], cross["loss_sta"])
    with pytest.raises(ValueError, match="contrast='both' needs content_words"):
        SISTALoss(sia, sta)(**inputs)


def test_constant_and_errors() -> None:
    assert STA_CONTRASTS == ("within", "cross", "both")
    with pytest.raises(ValueError, match=r"contrast must be one of \('within', 'cross', 'both'\), got 'global'"):
        SparseTokenAlignmentLoss(contrast="global")
    for chunk in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="image_chunk_size must be a positive integer or None"):
            SparseTokenAlignmentLoss(image_chunk_size=chunk)
    patch_emb, token_emb = random_embeddings(batch=6, patches=5, tokens=7, dim=4)
    for contrast in ("cross", "both"):
        loss = SparseTokenAlignmentLoss(contrast=contrast)
        with pytest.raises(ValueError, match=f"contrast='{contrast}' needs content_words"):
            loss(patch_emb, token_emb, MASK)
    loss = SparseTokenAlignmentLoss(contrast="cross")
    with pytest.raises(ValueError, match=r"content_words must have shape \(B, T\) = \(6, 7\), got \(6, 6\)"):
        loss(patch_emb, token_emb, MASK, content_words=WORDS[:, :6])
    with pytest.raises(ValueError, match=r"content_sides must have shape \(B, T\) = \(6, 7\), got \(5, 7\)"):
        loss(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES[:5])
    with pytest.raises(ValueError, match="content_words must be an integer tensor, got dtype torch.float32"):
        loss(patch_emb, token_emb, MASK, content_words=WORDS.float())
    with pytest.raises(ValueError, match="content_sides must be an integer tensor, got dtype torch.bool"):
        loss(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES > 0)
    bad_sides = SIDES.clone()
    bad_sides[0, 0] = 3
    with pytest.raises(ValueError, match=r"content_sides must be 0 .* got values \[3\]"):
        loss(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=bad_sides)
    bad_sides[0, 0] = 1
    bad_sides[3, 0] = 7  # not a content word: ignored
    loss(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=bad_sides)


def test_place_unaware_exclusion_ignores_the_sides() -> None:
    """``place_aware=False``: any report stating the class leaves the denominator, whatever the sides say."""
    patch_emb, token_emb = random_embeddings(6, 5, 7, 4, seed=4)
    loss = SparseTokenAlignmentLoss(contrast="cross", place_aware=False)
    unaware = loss(patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES)
    no_sides = SparseTokenAlignmentLoss(contrast="cross")(patch_emb, token_emb, MASK, content_words=WORDS)
    aware = SparseTokenAlignmentLoss(contrast="cross")(
        patch_emb, token_emb, MASK, content_words=WORDS, content_sides=SIDES
    )
    torch.testing.assert_close(unaware["loss"], no_sides["loss"])
    reference = cross_loop_reference(patch_emb, token_emb, MASK, WORDS, torch.zeros_like(SIDES), None, 0.1)
    torch.testing.assert_close(unaware["loss"], reference)
    assert not torch.allclose(unaware["loss"], aware["loss"])  # report 2's left class 0 is a negative only when aware
