"""Classification metrics against hand-made cases, through the functions and through the bundle's evaluator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from PIL import Image

from sista_monai.metrics import binary_classification_metrics, roc_curve
from sista_monai.visualize import plot_roc_curve

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = REPO_ROOT / "bundles" / "rsna_pneumonia_classification" / "configs" / "train.json"

LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
# Known confusion matrix at 0.5: TP 3 (0.9, 0.8, 0.7), FN 1 (0.3), TN 4 (0.1, 0.2, 0.4, 0.45), FP 2 (0.6, 0.55).
KNOWN_SCORES = [0.9, 0.8, 0.7, 0.3, 0.6, 0.55, 0.1, 0.2, 0.4, 0.45]
KNOWN = {"sensitivity": 3 / 4, "specificity": 4 / 6, "accuracy": 7 / 10, "f1": 2 * 3 / (2 * 3 + 2 + 1)}
# AUROC of KNOWN_SCORES: positive-negative pairs ranked correctly: 0.9/0.8/0.7 beat all 6 (18); 0.3 beats 0.1, 0.2 (2).
KNOWN_AUROC = 20 / 24


def test_perfect_ranking_has_auroc_one() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01]
    metrics = binary_classification_metrics(scores, LABELS)
    assert metrics["auroc"] == pytest.approx(1.0)
    assert metrics["accuracy"] == pytest.approx(1.0) and metrics["f1"] == pytest.approx(1.0)


def test_reversed_ranking_has_auroc_zero() -> None:
    scores = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    metrics = binary_classification_metrics(scores, LABELS)
    assert metrics["auroc"] == pytest.approx(0.0)
    assert metrics["sensitivity"] == pytest.approx(0.0) and metrics["specificity"] == pytest.approx(2 / 6)


def test_known_confusion_matrix() -> None:
    metrics = binary_classification_metrics(KNOWN_SCORES, LABELS, threshold=0.5)
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (3, 1, 4, 2)
    for name, value in KNOWN.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    assert metrics["auroc"] == pytest.approx(KNOWN_AUROC)


def test_threshold_moves_the_operating_point() -> None:
    metrics = binary_classification_metrics(KNOWN_SCORES, LABELS, threshold=0.25)
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (4, 0, 2, 4)


def test_single_class_gives_no_auroc() -> None:
    with pytest.warns(UserWarning):
        metrics = binary_classification_metrics([0.2, 0.8], [1, 1])
    assert math.isnan(metrics["auroc"])
    with pytest.raises(ValueError, match="needs both classes"):
        roc_curve([0.2, 0.8], [1, 1])


def test_roc_curve_area_equals_monai_auroc_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 1)  # many ties
    labels = (rng.random(200) < scores).astype(int)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(thresholds) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(binary_classification_metrics(scores, labels)["auroc"], abs=1e-6)


def test_roc_plot_is_a_png(tmp_path: Path) -> None:
    fpr, tpr, _ = roc_curve(KNOWN_SCORES, LABELS)
    path = plot_roc_curve(fpr, tpr, KNOWN_AUROC, tmp_path / "roc.png", operating_point=(2 / 6, 3 / 4), threshold=0.5)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        (
            [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01],
            {"auroc": 1.0, "accuracy": 1.0, "f1": 1.0, "sensitivity": 1.0, "specificity": 1.0},
        ),
        (
            [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9],
            {"auroc": 0.0, "sensitivity": 0.0, "specificity": 2 / 6},
        ),
        (KNOWN_SCORES, {"auroc": KNOWN_AUROC, **KNOWN}),
    ],
    ids=["perfect", "reversed", "known_confusion_matrix"],
)
def test_bundle_test_evaluator_reports_hand_made_cases(
    tmp_path: Path, scores: list[float], expected: dict[str, float]
) -> None:
    """The train.json test evaluator (MONAI SupervisedEvaluator + ROCAUC/ConfusionMatrix) on logits given as images."""
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    parser["bundle_root"] = str(tmp_path)
    parser["device"] = "$torch.device('cpu')"
    parser["network"] = "$torch.nn.Identity()"  # the "image" of each item is its logit
    parser["report_extra"] = {"case": "hand-made"}
    items = [
        {"image": torch.tensor([_logit(p)], dtype=torch.float32), "label": torch.tensor([float(y)])}
        for p, y in zip(scores, LABELS, strict=True)
    ]
    parser["test#dataloader"] = DataLoader(items, batch_size=4, shuffle=False)
    evaluator = parser.get_parsed_content("evaluator")
    evaluator.run()
    for name, value in expected.items():
        assert evaluator.state.metrics[name] == pytest.approx(value, abs=1e-6), name
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["n"] == 10 and report["positives"] == 4 and report["case"] == "hand-made"
    for name, value in expected.items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-6), name
    assert report["roc_curve"] == "roc_curve.png" and (tmp_path / "eval" / "roc_curve.png").is_file()
