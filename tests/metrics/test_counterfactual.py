"""The text pointer and the counterfactual grounding game on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sista_monai.metrics import (
    CounterfactualGrounding,
    PointingTrials,
    counterfactual_follow,
    fit_text_pointer,
    over_image_free,
    pointing_trials,
    summarise_follow,
    text_pointer_patches,
)
from sista_monai.metrics.pretraining import TARGETS, summarise_test_metrics
from sista_monai.networks import SISTAOutput

GRID = (2, 2)  # a 4 x 4 input: patch k covers x 2*(k // 2) .. +1, y 2*(k % 2) .. +1


def _trials(words: list[tuple[int, ...]], contexts: list[frozenset], inside: list[list[int]]) -> PointingTrials:
    cells = torch.zeros(len(words), 4, dtype=torch.bool)
    for row, patches in enumerate(inside):
        cells[row, patches] = True
    zeros = torch.zeros(len(words), dtype=torch.long)
    return PointingTrials(zeros, zeros, cells, words, contexts)


LEFT, RIGHT = frozenset({(21,)}), frozenset({(22,)})


def test_text_pointer_reads_the_sentence_context_with_fallbacks() -> None:
    training = [
        _trials(
            [(5,), (5,), (5,), (5,), (7,)],
            [LEFT, LEFT, RIGHT, RIGHT, frozenset()],
            [[3], [3, 1], [0], [0, 2], [2]],
        )
    ]
    per_context, per_word, fallback = fit_text_pointer(training)
    assert per_context == {((5,), LEFT): 3, ((5,), RIGHT): 0, ((7,), frozenset()): 2}
    assert per_word == {(5,): 0} | {(7,): 2}  # word 5: patches 0 and 3 twice each -> the lowest, 0
    assert fallback == 0  # 0: 2, 1: 1, 2: 2, 3: 2 -> 0
    test = _trials([(5,), (5,), (5,), (9,)], [LEFT, RIGHT, frozenset({(23,)}), LEFT], [[3], [1], [0], [0]])
    # seen contexts point by context; an unseen context falls back to the word; an unseen word to the fallback
    assert text_pointer_patches((per_context, per_word, fallback), test).tolist() == [3, 0, 0, 0]
    assert fit_text_pointer([]) == ({}, {}, 0)
    without = _trials([(5,)], [LEFT], [[0]])
    without.contexts = None
    with pytest.raises(ValueError, match="sentence_id"):
        fit_text_pointer([without])
    with pytest.raises(ValueError, match="sentence_id"):
        text_pointer_patches((per_context, per_word, fallback), without)


def test_counterfactual_follow_needs_both_boxes() -> None:
    original = _trials([(5,)] * 4, [LEFT] * 4, [[0], [0], [0, 1], [0]])
    twin_cells = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    model_original = torch.tensor([0, 0, 1, 2])
    model_twin = torch.tensor([3, 0, 1, 3])
    # 1: follows; 2: stays on the old box; 3: one patch in both boxes (they share patch 1); 4: misses the original
    assert counterfactual_follow(original, twin_cells, model_original, model_twin).tolist() == [
        True,
        False,
        True,
        False,
    ]
    # a pointer that never sees the image gives one patch for both: it follows only where the boxes share it
    fixed = torch.tensor([0, 3, 1, 0])
    assert counterfactual_follow(original, twin_cells, fixed, fixed).tolist() == [False, False, True, False]


def test_summarise_follow_per_finding() -> None:
    follows = {
        "model": [True, False, True, True],
        "prior": [False, False, False, True],
        "text_pointer": [False, False, True, False],
    }
    summary = summarise_follow(follows, [0, 0, 2, 2], ("opacity", "pneumothorax", "effusion"))
    assert summary["follow_rate"] == 0.75 and summary["prior"] == 0.25 and summary["text_pointer"] == 0.25
    assert summary["trials"] == 4
    assert summary["per_finding"] == {
        "opacity": {"follow_rate": 0.5, "prior": 0.0, "text_pointer": 0.0, "trials": 2},
        "effusion": {"follow_rate": 1.0, "prior": 0.5, "text_pointer": 0.5, "trials": 2},
    }
    empty = summarise_follow({k: [] for k in follows}, [], ("opacity",))
    assert math.isnan(empty["follow_rate"]) and empty["trials"] == 0 and empty["per_finding"] == {}


def test_over_image_free_is_conservative_at_zero() -> None:
    assert over_image_free(0.6, [0.1, 0.05], 50) == pytest.approx(6.0)
    assert over_image_free(0.6, [0.0, 0.0], 50) == pytest.approx(30.0)  # 0 -> 1/50, the measurable resolution
    assert math.isnan(over_image_free(0.6, [float("nan"), 0.0], 50))
    assert math.isnan(over_image_free(0.6, [0.0, 0.0], 0))


class BrightPatchPointer(nn.Module):
    """Points every word at the brightest patch of its image: a model that only looks at the image."""

    def forward(self, image, input_ids, attention_mask, word_mask=None, word_start=None) -> SISTAOutput:
        patches = nn.functional.avg_pool2d(image, 2).flatten(1)  # (B, 4) mean of each 2 x 2 patch
        patch_emb = torch.diag_embed(patches)  # patch k along axis k, its length its brightness
        batch, tokens = input_ids.shape
        token_emb = torch.ones(batch, tokens, 4)  # every word likes every axis equally: argmax = brightest patch
        return SISTAOutput(
            image_emb=torch.zeros(batch, 4),
            patch_emb=patch_emb,
            text_emb=torch.zeros(batch, 4),
            token_emb=token_emb,
            token_mask=attention_mask.bool(),
            patch_grid=GRID,
        )


class FixedPatchPointer(BrightPatchPointer):
    """Points every word at patch 3 whatever the image: a pointer that never looks at it."""

    def forward(self, image, input_ids, attention_mask, word_mask=None, word_start=None) -> SISTAOutput:
        fixed = torch.zeros_like(image)
        fixed[:, :, 2:, 2:] = 1.0
        return super().forward(fixed, input_ids, attention_mask)


def _pair_batch() -> dict[str, torch.Tensor]:
    """Two pairs: an opacity moved from patch 0 to patch 3, an effusion moved from patch 2 to patch 1."""
    image, twin = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    lesion, twin_lesion = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    for b, (cls, old, new) in enumerate(((0, (0, 0), (2, 2)), (2, (2, 0), (0, 2)))):
        image[b, 0, old[0] : old[0] + 2, old[1] : old[1] + 2] = 1.0
        twin[b, 0, new[0] : new[0] + 2, new[1] : new[1] + 2] = 1.0
        lesion[b, cls, old[0] : old[0] + 2, old[1] : old[1] + 2] = 1.0
        twin_lesion[b, cls, new[0] : new[0] + 2, new[1] : new[1] + 2] = 1.0
    return {
        "image": image,
        "twin_image": twin,
        "lesion_mask": lesion,
        "twin_lesion_mask": twin_lesion,
        "input_ids": torch.tensor([[11, 21, 5, 12], [13, 22, 6, 12]]),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
        "word_start": torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]),
        "lesion_word": torch.tensor([[0, -1, -1, -1], [2, -1, -1, 2]]),  # "opacity"; "effusion" twice
        "pointing_mask": torch.tensor([[False, True, False, False], [False, True, False, False]]),
        "sentence_id": torch.zeros(2, 4, dtype=torch.long),
    }


def _prior_batch() -> dict[str, torch.Tensor]:
    """Training trials: opacity (word 11) always at patch 0, effusion (word 13) at patch 2."""
    batch = _pair_batch()
    return {k: v for k, v in batch.items() if not k.startswith("twin")}


def test_counterfactual_metric_follows_only_with_the_image() -> None:
    names = ("opacity", "pneumothorax", "effusion")
    result = CounterfactualGrounding(BrightPatchPointer(), [_pair_batch()], [_prior_batch()], names).compute()
    assert result["counterfactual_follow_rate"] == 1.0 and result["counterfactual_trials"] == 3
    # the prior and the text pointer learned the original places: they hit the original, never the twin
    assert result["counterfactual_prior"] == 0.0 and result["counterfactual_text_pointer"] == 0.0
    assert result["counterfactual_per_finding"]["effusion"]["trials"] == 2
    assert set(result["counterfactual_per_finding"]) == {"opacity", "effusion"}
    blind = CounterfactualGrounding(FixedPatchPointer(), [_pair_batch()], [_prior_batch()], names).compute()
    assert blind["counterfactual_follow_rate"] == 0.0
    none = CounterfactualGrounding(BrightPatchPointer(), None, [_prior_batch()], names).compute()
    assert none["counterfactual_trials"] == 0 and math.isnan(none["counterfactual_follow_rate"])


def test_counterfactual_block_and_targets_in_the_report() -> None:
    metrics = {
        "counterfactual_follow_rate": 0.6,
        "counterfactual_prior": 0.0,
        "counterfactual_text_pointer": 0.02,
        "counterfactual_trials": 50,
        "counterfactual_per_finding": {
            "opacity": {"follow_rate": 0.6, "prior": 0.0, "text_pointer": 0.02, "trials": 50}
        },
        "lesion_pointing_text_pointer": 0.9,
    }
    summary = summarise_test_metrics(metrics, 10)
    block = summary["grounding"]["counterfactual"]
    assert block["follow_rate"] == 0.6 and block["trials"] == 50 and block["per_finding"]["opacity"]["trials"] == 50
    assert summary["grounding"]["lesion"]["text_pointer"] == 0.9
    assert summary["measured"]["counterfactual_over_image_free"] == pytest.approx(30.0)
    assert (
        summary["targets_met"]["counterfactual_follow_rate"]
        and summary["targets_met"]["counterfactual_over_image_free"]
    )
    assert TARGETS["counterfactual_follow_rate"] == 0.5 and TARGETS["counterfactual_over_image_free"] == 5.0
    missed = summarise_test_metrics({**metrics, "counterfactual_follow_rate": 0.45}, 10)
    assert not missed["targets_met"]["counterfactual_follow_rate"]
    assert missed["targets_met"]["counterfactual_over_image_free"]  # 0.45 / 0.02 = 22.5
    close = summarise_test_metrics({**metrics, "counterfactual_text_pointer": 0.15}, 10)
    assert close["measured"]["counterfactual_over_image_free"] == pytest.approx(4.0)
    assert not close["targets_met"]["counterfactual_over_image_free"]
    absent = summarise_test_metrics({}, 10)["grounding"]["counterfactual"]
    assert absent["trials"] == 0 and math.isnan(absent["follow_rate"]) and absent["per_finding"] == {}


def test_pointing_trials_carry_sentence_contexts() -> None:
    trials = pointing_trials(_prior_batch(), "lesion", GRID)
    assert trials.contexts == [frozenset({(21,)}), frozenset({(22,)}), frozenset({(22,)})]
