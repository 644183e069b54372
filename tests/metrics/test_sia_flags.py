"""SIA flag statistics and the ``FalseNegativeFlags`` metric on hand-computed cases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sista_monai.metrics import FalseNegativeFlags, flag_statistics, no_finding_columns
from sista_monai.metrics.pretraining import summarise_test_metrics

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "bundles" / "pretrain" / "configs" / "train.json"


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
