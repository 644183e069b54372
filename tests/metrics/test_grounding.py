"""Pointing games, the image-free prior and the pretraining report's figures on hand-computed cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sista_monai.metrics import (
    PointingGame,
    PointingTrials,
    fit_pointing_prior,
    patch_cells,
    pointing_game,
    pointing_trials,
    prior_accuracy,
    training_trials,
)
from sista_monai.metrics.pretraining import TARGETS, summarise_test_metrics

GRID = (2, 2)  # patch k at (k // 2, k % 2) of a 4 x 4 image: patch 1 covers x 0-1, y 2-3


def _onehot_patches() -> torch.Tensor:
    return torch.eye(4).unsqueeze(0)  # (1, P=4, D=4): patch k is basis vector k


def _batch() -> dict[str, torch.Tensor]:
    lesion = torch.zeros(1, 3, 4, 4)
    lesion[0, 0, 2:4, 2:4] = 1.0  # an opacity box over patch 3; no pneumothorax, no effusion
    zone = torch.zeros(1, 1, 4, 4)
    zone[0, 0, 0:2, 0:4] = 1.0  # the zone covers patches 0 and 1
    return {
        "input_ids": torch.tensor([[11, 12, 13, 14]]),
        "word_start": torch.tensor([[0, 1, 2, 2]]),  # token 3 is the second piece of the word at 2
        "lesion_word": torch.tensor([[0, 1, -1, -1]]),  # "opacity", "pneumothorax" (negated: no truth)
        "lesion_mask": lesion,
        "pointing_mask": torch.tensor([[True, False, True, False]]),
        "zone_mask": zone,
    }


def test_patch_cells_cover_rule() -> None:
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 0:2, 0:2] = 1.0
    mask[0, 0, 3, 3] = 1.0  # a quarter of patch 3
    assert patch_cells(mask, GRID, 0.5)[0, 0].tolist() == [True, False, False, False]
    assert patch_cells(mask, GRID, 0.0)[0, 0].tolist() == [True, False, False, True]


def test_lesion_game_scores_only_words_with_truth() -> None:
    trials = pointing_trials(_batch(), "lesion", GRID)
    assert len(trials) == 1 and trials.token.tolist() == [0] and trials.words == [(11,)]
    tokens = torch.zeros(1, 4, 4)
    tokens[0, 0] = torch.tensor([0.0, 0.1, 0.2, 0.9])  # "opacity" points at patch 3: inside its box
    hit, chance = pointing_game(_onehot_patches(), tokens, trials)
    assert hit.tolist() == [True] and chance.tolist() == [0.25]
    tokens[0, 0] = torch.tensor([0.9, 0.1, 0.2, 0.0])
    assert pointing_game(_onehot_patches(), tokens, trials)[0].tolist() == [False]


class _CountingLoader:
    """A stand-in for a DataLoader that counts how often it is iterated."""

    def __init__(self) -> None:
        self.passes = 0

    def __iter__(self):  # noqa: ANN204
        self.passes += 1
        yield _batch()


def test_training_trials_read_a_loader_once_per_game_and_grid() -> None:
    loader = _CountingLoader()
    first = training_trials(loader, "lesion", GRID)
    assert training_trials(loader, "lesion", GRID) is first and loader.passes == 1  # the prior, pointer, twins share
    assert [len(t) for t in first] == [1] and first[0].words == [(11,)]
    training_trials(loader, "zone", GRID)
    training_trials(loader, "lesion", (1, 1))
    assert loader.passes == 3  # another game or grid is another pass
    assert training_trials(_CountingLoader(), "lesion", GRID) is not first  # per loader object
    batches = [_batch()]
    assert training_trials(batches, "lesion", GRID) is not training_trials(batches, "lesion", GRID)  # lists: no cache


def test_zone_game_and_multi_piece_word_key() -> None:
    trials = pointing_trials(_batch(), "zone", GRID)
    assert trials.token.tolist() == [0, 2] and trials.words == [(11,), (13, 14)]
    tokens = torch.zeros(1, 4, 4)
    tokens[0, 0, 1] = 1.0  # patch 1: inside the zone
    tokens[0, 2, 3] = 1.0  # patch 3: outside
    hit, chance = pointing_game(_onehot_patches(), tokens, trials)
    assert hit.tolist() == [True, False] and chance.tolist() == [0.5, 0.5]


def test_ties_point_at_the_lowest_patch() -> None:
    trials = pointing_trials(_batch(), "lesion", GRID)
    hit, _ = pointing_game(_onehot_patches(), torch.zeros(1, 4, 4), trials)  # all similarities 0: patch 0
    assert hit.tolist() == [False]


def test_no_trials_and_missing_keys() -> None:
    batch = _batch()
    batch["lesion_word"] = torch.full((1, 4), -1)
    trials = pointing_trials(batch, "lesion", GRID)
    assert len(trials) == 0
    hit, chance = pointing_game(_onehot_patches(), torch.zeros(1, 4, 4), trials)
    assert hit.numel() == 0 and chance.numel() == 0
    del batch["lesion_mask"]
    with pytest.raises(KeyError, match="lesion_mask"):
        pointing_trials(batch, "lesion", GRID)
    with pytest.raises(ValueError, match="game"):
        pointing_trials(_batch(), "heart", GRID)


def _trials(words: list[tuple[int, ...]], inside: list[list[int]]) -> PointingTrials:
    cells = torch.zeros(len(words), 4, dtype=torch.bool)
    for row, patches in enumerate(inside):
        cells[row, patches] = True
    return PointingTrials(
        torch.zeros(len(words), dtype=torch.long), torch.zeros(len(words), dtype=torch.long), cells, words
    )


def test_prior_fitted_per_word_with_fallback_and_ties() -> None:
    training = [_trials([(5,), (5,), (5,), (7,)], [[3], [3], [0], [1, 2]])]
    per_word, fallback = fit_pointing_prior(training)
    # word 5: patch 3 twice, patch 0 once -> 3; word 7: patches 1 and 2 tied -> 1; overall: 3 (2) beats 0, 1, 2 (1)
    assert per_word == {(5,): 3, (7,): 1} and fallback == 3
    test = [_trials([(5,), (7,), (9,)], [[3], [0], [2, 3]])]
    assert prior_accuracy((per_word, fallback), test) == (pytest.approx(2 / 3), 3)  # the unseen word takes patch 3


def test_prior_without_trials() -> None:
    assert fit_pointing_prior([]) == ({}, 0)
    accuracy, count = prior_accuracy(({}, 0), [])
    assert math.isnan(accuracy) and count == 0


def _output(batch: dict[str, torch.Tensor], tokens: torch.Tensor) -> dict:
    pred = SimpleNamespace(patch_emb=_onehot_patches(), token_emb=tokens, patch_grid=GRID)
    return {"pred": pred, "label": batch}


def test_pointing_game_metric_with_prior() -> None:
    tokens = torch.zeros(1, 4, 4)
    tokens[0, 0, 3] = 1.0
    accuracy, prior, trials = (
        PointingGame("accuracy", "lesion"),
        PointingGame("prior", "lesion", prior_data=[_batch()]),
        PointingGame("trials", "lesion"),
    )
    for metric in (accuracy, prior, trials):
        metric.reset()
        metric.update(metric._output_transform(_output(_batch(), tokens)))
    # the prior, fitted on the same single trial (the opacity box covers only patch 3), points "opacity" at patch 3
    assert accuracy.compute() == 1.0 and prior.compute() == 1.0 and trials.compute() == 1.0
    with pytest.raises(ValueError, match="prior_data"):
        PointingGame("prior", "lesion")


def test_summary_targets_from_measured_ratios() -> None:
    metrics = {
        "lesion_pointing_accuracy": 0.6,
        "lesion_pointing_prior": 0.3,
        "lesion_pointing_chance": 0.1,
        "lesion_pointing_trials": 40.0,
        "zone_pointing_accuracy": 0.2,
        "zone_pointing_prior": 0.5,
        "zone_pointing_chance": 0.1,
        "zone_pointing_trials": 80.0,
        "semantic_precision_at_5": 0.49,
        "semantic_precision_chance": 0.25,
        "sia_flag_precision": 0.8,
        "sia_flag_recall": 0.49,
        "sia_flag_rate": 0.1,
        "sia_base_rate": 0.13,
        "sia_rows_without_negatives": 0.0,
        "sia_abnormal_flag_precision": 0.6,
        "sia_abnormal_flag_recall": 0.4,
        "sta_patches_kept": 0.2,
    }
    summary = summarise_test_metrics(
        metrics, 88, {"sia": {"source": "text_frozen", "threshold": 0.7}, "sta": {"sparsity_threshold": 0.5}}
    )
    assert summary["measured"]["lesion_grounding_over_prior"] == pytest.approx(2.0)
    assert summary["measured"]["semantic_precision_over_chance"] == pytest.approx(1.96)
    assert summary["targets_met"] == {
        "lesion_grounding_over_prior": True,
        "semantic_precision_over_chance": False,
        "sia_flag_precision": True,
        "sia_flag_recall": False,
        "counterfactual_follow_rate": False,  # not measured (no twins): NaN never meets a target
        "counterfactual_over_image_free": False,
    }
    assert set(summary["targets"]) == set(TARGETS)
    assert summary["grounding"]["lesion"]["trials"] == 40 and summary["sia"]["source"] == "text_frozen"
    assert summary["sia"]["abnormal_flag_precision"] == 0.6 and summary["sia"]["abnormal_flag_recall"] == 0.4
    assert math.isnan(summary["sia"]["abnormal_base_rate"])  # not measured: NaN, the key is still there
    assert summary["retrieval"]["chance"]["R@5"] == pytest.approx(5 / 88)
    missing = summarise_test_metrics({}, 10)
    assert missing["targets_met"] == dict.fromkeys(TARGETS, False) and missing["grounding"]["zone"]["trials"] == 0
