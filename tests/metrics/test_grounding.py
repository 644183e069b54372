"""Pointing games, the image-free prior, SIA flag statistics and STA sparsity on hand-computed cases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sista_monai.metrics import (
    FalseNegativeFlags,
    PatchesKept,
    PointingGame,
    PointingTrials,
    fit_pointing_prior,
    flag_statistics,
    no_finding_columns,
    patch_cells,
    patches_kept,
    pointing_game,
    pointing_trials,
    prior_accuracy,
    training_trials,
)
from sista_monai.metrics.pretraining import TARGETS, summarise_test_metrics

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "bundles" / "pretrain" / "configs" / "train.json"
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


def _flag_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # sets {1}, {1}, {0}, {}
    return features, labels


def test_flag_statistics_hand_computed() -> None:
    features, labels = _flag_inputs()
    stats = flag_statistics(features, labels, 0.9, "text_frozen", batch_size=3)
    # flagged: every ordered pair among reports 0-2 (6 of 12); agreeing: (0, 1) and (1, 0)
    assert stats["flag_rate"] == pytest.approx(6 / 12) and stats["flagged_pairs"] == 6
    assert stats["flag_precision"] == pytest.approx(2 / 6) and stats["flag_recall"] == pytest.approx(1.0)
    assert stats["base_rate"] == pytest.approx(2 / 12)
    # rows 0-2 have 2 flags among 3 others: in a batch of 3 both others are flagged with probability 1/3
    assert stats["rows_without_negatives"] == pytest.approx(3 * (1 / 3) / 4)
    assert flag_statistics(features, labels, 0.9, "text_frozen", batch_size=2)[
        "rows_without_negatives"
    ] == pytest.approx(3 * (2 / 3) / 4)
    assert flag_statistics(features, labels, 0.9, "text_frozen")["rows_without_negatives"] == 0.0  # B = N = 4


def test_flag_statistics_undefined_cases() -> None:
    features, labels = _flag_inputs()
    nothing = flag_statistics(features, labels, 2.0, "text_frozen")
    assert math.isnan(nothing["flag_precision"]) and nothing["flag_rate"] == 0.0 and nothing["flag_recall"] == 0.0
    one = flag_statistics(features[:1], labels[:1], 0.5, "text_frozen")
    assert all(math.isnan(one[k]) for k in ("flag_rate", "flag_precision", "flag_recall", "base_rate"))
    different = flag_statistics(features, torch.eye(4), 0.9, "text_frozen")
    assert math.isnan(different["flag_recall"]) and different["base_rate"] == 0.0


def test_false_negative_flags_metric() -> None:
    features, labels = _flag_inputs()
    values = {}
    for report in ("precision", "recall", "rate", "base_rate", "rows_without_negatives"):
        metric = FalseNegativeFlags(0.9, "text_frozen", report, batch_size=3)
        metric.reset()
        metric.update(
            metric._output_transform(
                {"pred": SimpleNamespace(frozen_text_features=features), "label": {"labels": labels}}
            )
        )
        values[report] = metric.compute()
    assert values == pytest.approx(
        {"precision": 2 / 6, "recall": 1.0, "rate": 0.5, "base_rate": 2 / 12, "rows_without_negatives": 0.25}
    )


def _abnormal_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # columns No Finding, A, B; finding sets {}, {}, {A}, {A}, {A} (reports 0 and 1 are normal)
    labels = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]])
    return features, labels


# By hand, θ = 0.9 (reports 0-3 share one direction, report 4 another), 20 unpaired (ordered) pairs:
#   flagged: every ordered pair among reports 0-3 = 12; agreeing: (0, 1), (2, 3), (2, 4), (3, 4) both ways = 8;
#   flagged and agreeing: (0, 1), (2, 3) both ways = 4
#   -> flag_precision 4/12, flag_recall 4/8, flag_rate 12/20, base_rate 8/20.
# The pairs of two abnormal reports (2, 3, 4): 6 ordered pairs, all agreeing ({A}); flagged: (2, 3) both ways = 2
#   -> abnormal_flag_precision 2/2, abnormal_flag_recall 2/6, abnormal_flag_rate 2/6, abnormal_base_rate 6/6.
# The pairs of a normal and an abnormal report: {0, 1} x {2, 3, 4} both ways = 12; flagged: {0, 1} x {2, 3} both
#   ways = 8 -> normal_abnormal_flag_rate 8/12.
ABNORMAL = {
    "abnormal_flag_precision": 1.0,
    "abnormal_flag_recall": 2 / 6,
    "abnormal_flag_rate": 2 / 6,
    "abnormal_base_rate": 1.0,
    "normal_abnormal_flag_rate": 8 / 12,
}


def test_abnormal_flag_statistics_hand_computed() -> None:
    features, labels = _abnormal_inputs()
    stats = flag_statistics(features, labels, 0.9, "text_frozen", no_finding=(0,))
    assert stats["flag_precision"] == pytest.approx(4 / 12) and stats["flag_recall"] == pytest.approx(4 / 8)
    assert stats["flag_rate"] == pytest.approx(12 / 20) and stats["base_rate"] == pytest.approx(8 / 20)
    assert {k: stats[k] for k in ABNORMAL} == pytest.approx(ABNORMAL)
    # the same reports with normal = the all-zero vector (no "No Finding" column): the same figures
    zero_normal = flag_statistics(features, labels[:, 1:], 0.9, "text_frozen")
    assert {k: zero_normal[k] for k in ABNORMAL} == pytest.approx(ABNORMAL)
    # without naming the "No Finding" column no report is normal: every pair counts, as in the overall figures
    unnamed = flag_statistics(features, labels, 0.9, "text_frozen")
    assert unnamed["abnormal_flag_precision"] == pytest.approx(4 / 12) and unnamed["abnormal_base_rate"] == 8 / 20


def test_abnormal_flag_statistics_undefined_cases() -> None:
    features, labels = _abnormal_inputs()
    normal = flag_statistics(features, torch.zeros(5, 3), 0.9, "text_frozen")  # only normal-normal pairs
    assert all(math.isnan(normal[k]) for k in ABNORMAL)
    nothing = flag_statistics(features, labels, 2.0, "text_frozen", no_finding=(0,))  # nothing flagged
    assert math.isnan(nothing["abnormal_flag_precision"]) and nothing["abnormal_flag_recall"] == 0.0
    one = flag_statistics(features[:1], labels[:1], 0.5, "text_frozen")
    assert all(math.isnan(one[k]) for k in ABNORMAL)
    with pytest.raises(ValueError, match="out of range"):
        flag_statistics(features, labels, 0.9, "text_frozen", no_finding=(3,))


def test_no_finding_columns_by_name() -> None:
    assert no_finding_columns(["Atelectasis", "No Finding", "Pneumothorax"]) == (1,)
    assert no_finding_columns(["normal", "Calcified Granuloma"]) == (0,)  # IU X-ray's MeSH heading
    assert no_finding_columns(None) == () and no_finding_columns([]) == ()


def test_false_negative_flags_abnormal_reports() -> None:
    features, labels = _abnormal_inputs()
    names = ["No Finding", "A", "B"]
    values = {}
    for report, key in (
        ("abnormal_precision", "abnormal_flag_precision"),
        ("abnormal_recall", "abnormal_flag_recall"),
        ("abnormal_rate", "abnormal_flag_rate"),
        ("abnormal_base_rate", "abnormal_base_rate"),
        ("normal_abnormal_rate", "normal_abnormal_flag_rate"),
    ):
        metric = FalseNegativeFlags(0.9, "text_frozen", report, label_names=names)
        metric.reset()
        metric.update(
            metric._output_transform(
                {"pred": SimpleNamespace(frozen_text_features=features), "label": {"labels": labels}}
            )
        )
        values[key] = metric.compute()
    assert values == pytest.approx(ABNORMAL)
    wrong = FalseNegativeFlags(0.9, "text_frozen", "abnormal_precision", label_names=["No Finding", "A"])
    wrong.reset()
    with pytest.raises(ValueError, match="label_names"):
        wrong.update(
            wrong._output_transform(
                {"pred": SimpleNamespace(frozen_text_features=features), "label": {"labels": labels}}
            )
        )


def test_sia_block_of_the_report_and_the_evaluator_metrics_agree() -> None:
    """Every figure of ``eval/metrics.json``'s ``sia`` block is one of the pretraining evaluator's metrics."""
    summary = summarise_test_metrics({}, 10, {"sia": {"source": "findings", "threshold": 0.9}})
    names = set(summary["sia"]) - {"source", "threshold"}
    assert names == {
        "flag_precision",
        "flag_recall",
        "flag_rate",
        "base_rate",
        "rows_without_negatives",
        "abnormal_flag_precision",
        "abnormal_flag_recall",
        "abnormal_flag_rate",
        "abnormal_base_rate",
        "normal_abnormal_flag_rate",
    }
    metrics = json.loads(TRAIN_CONFIG.read_text())["evaluation_metrics"]
    assert {f"sia_{name}" for name in names} == {k for k in metrics if k.startswith("sia_")}
    for name in names:
        metric = metrics[f"sia_{name}"]
        assert metric["_target_"] == "sista_monai.metrics.FalseNegativeFlags"
        assert FalseNegativeFlags.REPORTS[metric["report"]] == name  # the metric computes the figure it is named for
        # a "No Finding" column must not make a normal report abnormal: the abnormal figures know the label names
        assert metric.get("label_names") == ("@label_names" if "abnormal" in name else None)


def test_patches_kept() -> None:
    weights = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])
    assert patches_kept(weights, torch.tensor([[True, False]])) == (0.5, 1)
    assert patches_kept(weights, torch.tensor([[True, True]])) == (1.5, 2)
    metric = PatchesKept(sparsity_threshold=0.5)
    metric.reset()
    patches = torch.eye(4).unsqueeze(0)
    tokens = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.9]]])
    metric.update(
        metric._output_transform(
            {
                "pred": SimpleNamespace(patch_emb=patches, token_emb=tokens, token_mask=torch.tensor([[True, True]])),
                "label": {},
            }
        )
    )
    # token 0: min-max -> [1, 0, 0, 0], only patch 0 >= 0.5; token 1: [1, 1, 1, 0] -> three patches
    assert metric.compute() == pytest.approx((1 / 4 + 3 / 4) / 2)


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
