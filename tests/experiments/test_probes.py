"""The probes' validation scores from a run's TensorBoard log, and the probe fraction on hand-built results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from sista_monai.experiments.probes import constant_validation_score, probe_fraction, validation_scores
from sista_monai.experiments.tables import format_probe_fractions, format_table, format_validation


def _results(random_1: list[float], random_10: list[float], **extra: Any) -> dict[str, Any]:
    """Two encoders trained on classification at 1 and 10 %; the validation AUROC of each seed as given."""
    return {
        "variants": {
            "sista": {
                "pretrain": {"lesion": [0.2, 0.3]},
                "classification": {"1": [0.6, 0.6], "10": [0.7, 0.7]},
                "validation_final": {"classification": {"1": [0.55, 0.65], "10": [0.7, 0.8]}},
                "validation_best": {"classification": {"1": [0.7, 0.7], "10": [0.8, 0.9]}},
            },
            "clip": {"pretrain": {"lesion": [0.1, 0.1]}},  # pretraining only: not an encoder of the task
            "random": {
                "classification": {"1": [0.45, 0.5], "10": [0.5, 0.55]},
                "validation_final": {"classification": {"1": random_1, "10": random_10}},
                "validation_best": {"classification": {"1": [0.6, 0.6], "10": [0.6, 0.6]}},
            },
        },
        **extra,
    }


def test_probe_fraction_is_the_smallest_where_every_probe_beats_the_constant() -> None:
    # random at 1 %: mean 0.48 ≤ 0.5; at 10 %: mean 0.52 > 0.5, and sista's 0.75 too
    assert probe_fraction(_results([0.46, 0.50], [0.50, 0.54]), "classification") == 10
    # every probe beats 0.5 at 1 % already (a NaN seed is left out of the mean)
    assert probe_fraction(_results([0.52, float("nan")], [0.5, 0.54]), "classification") == 1
    # no fraction: random's mean equals the constant at 10 % (beating means strictly above)
    assert probe_fraction(_results([0.4, 0.5], [0.5, 0.5]), "classification") is None
    # an encoder without validation scores (every seed NaN) beats nothing
    assert probe_fraction(_results([0.6, 0.6], [float("nan")] * 2), "classification") == 1
    assert probe_fraction(_results([float("nan")] * 2, [float("nan")] * 2), "classification") is None
    # the best epoch's scores (selection-biased) would pass 1 %
    assert probe_fraction(_results([0.46, 0.50], [0.50, 0.54]), "classification", key="validation_best") == 1
    assert probe_fraction(_results([0.6, 0.6], [0.6, 0.6]), "segmentation") is None  # no encoder trained on it


def test_constant_predictor_on_validation() -> None:
    assert constant_validation_score({}, "classification", 1) == 0.5  # a constant score's AUROC
    baselines = {"segmentation": {"10": {"value": 0.72, "validation": 0.65}}}
    assert constant_validation_score({"baselines": baselines}, "segmentation", 10) == 0.65
    assert constant_validation_score({"baselines": baselines}, "segmentation", 1) is None
    results = {
        "variants": {
            "sista": {"segmentation": {"10": [0.8]}, "validation_final": {"segmentation": {"10": [0.66]}}},
            "random": {"segmentation": {"10": [0.6]}, "validation_final": {"segmentation": {"10": [0.64]}}},
        },
        "baselines": baselines,
    }
    assert probe_fraction(results, "segmentation") is None  # random 0.64 ≤ the all-empty prediction's 0.65
    results["variants"]["random"]["validation_final"]["segmentation"]["10"] = [0.66]
    assert probe_fraction(results, "segmentation") == 10
    del results["baselines"]
    assert probe_fraction(results, "segmentation") is None  # constant predictor unknown


def test_page_states_the_probe_fraction() -> None:
    results = _results(
        [0.46, 0.50],
        [0.50, 0.54],
        baselines={
            "classification": {
                "1": {"value": 0.5, "what": "a constant score", "validation": 0.5},
                "10": {"value": 0.5, "what": "a constant score", "validation": 0.5},
            }
        },
    )
    (line,) = format_probe_fractions(results, ["classification"], [1, 10])
    assert line.startswith(
        "RSNA-like AUROC: probes compared at 10 %: the smallest fraction at which every encoder's probe beats the "
        "constant predictor on validation"
    )
    header = format_table(results, ["classification"], [1, 10]).splitlines()[0]
    assert header.endswith("| RSNA-like AUROC, 1 % | RSNA-like AUROC, 10 % (probe fraction) |")
    assert format_table(results, ["classification"], [1, 10]).splitlines()[-1].startswith("| image-free baseline")
    table = format_validation(results, ["classification"], [1, 10]).splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == [
        "| SISTA (the bundle default: SIA + STA)",
        "| random initialisation (no pretraining)",
        "| constant predictor (image-free baseline on validation)",
    ]  # clip was not trained downstream: no row
    assert table[2].endswith("| 0.600 ± 0.071 (best epoch 0.700) | 0.750 ± 0.071 (best epoch 0.850) |")
    assert table[-1].endswith("| 0.500 | 0.500 |")
    (none,) = format_probe_fractions(_results([0.4, 0.5], [0.5, 0.5]), ["classification"], [1, 10])
    assert none.startswith("RSNA-like AUROC: no probe fraction") and "1 %: random 0.450 ≤ 0.500" in none
    assert "10 %: random 0.500 ≤ 0.500" in none


def test_validation_scores_read_the_tensorboard_log(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    assert validation_scores(tmp_path, "auroc")["epochs"] == 0  # no log: NaN values
    assert math.isnan(validation_scores(tmp_path, "auroc")["final"])
    train = SummaryWriter(str(tmp_path / "logs"))  # the trainer's handler writes another file
    train.add_scalar("train_loss", 0.7, 1)
    train.close()
    writer = SummaryWriter(str(tmp_path / "logs"))
    for epoch, value in enumerate([0.55, float("nan"), 0.71, 0.62], start=1):
        writer.add_scalar("val_auroc", value, epoch)
    writer.close()
    scores = validation_scores(tmp_path, "auroc")
    assert scores["final"] == pytest.approx(0.62) and scores["best"] == pytest.approx(0.71) and scores["epochs"] == 4
    assert validation_scores(tmp_path, "map")["epochs"] == 0  # another task's metric is not there
