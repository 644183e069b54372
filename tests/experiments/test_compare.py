"""The comparison table: mean ± sample std over seeds, by hand; every downstream bundle is a task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sista_monai.experiments.compare import TASKS, RunResult, _read_metric, format_table, summarise

REPO_ROOT = Path(__file__).resolve().parents[2]


def _runs() -> list[RunResult]:
    values = {
        ("pretrained", 1): [0.70, 0.80, 0.90],
        ("random", 1): [0.5, 0.5, 0.8],
        ("pretrained", 10): [0.9, 0.9, 0.9],
    }
    return [
        RunResult(encoder, fraction, seed, value, 1.0, f"{encoder}_f{fraction}_s{seed}")
        for (encoder, fraction), seeds in values.items()
        for seed, value in enumerate(seeds)
    ]


def test_summary_is_the_mean_and_the_sample_std_over_seeds() -> None:
    summary = summarise(_runs())
    assert summary["pretrained"][1]["mean"] == pytest.approx(0.8)
    assert summary["pretrained"][1]["std"] == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert summary["random"][1]["mean"] == pytest.approx(0.6)
    assert summary["random"][1]["std"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0.04) / 2))
    assert summary["pretrained"][10]["std"] == pytest.approx(0.0, abs=1e-12)
    assert summary["pretrained"][1]["seeds"] == [0, 1, 2]


def test_table_has_a_row_per_encoder_and_a_column_per_fraction() -> None:
    table = format_table(_runs(), "mAP").splitlines()
    assert table[0] == "| encoder | mAP at 1 % labels | mAP at 10 % labels |"
    assert table[2] == "| SISTA-pretrained encoder | 0.800 ± 0.100 (n = 3) | 0.900 ± 0.000 (n = 3) |"
    assert table[3] == "| random initialisation | 0.600 ± 0.173 (n = 3) |  |"


def test_every_downstream_bundle_is_a_task_and_its_metric_is_in_its_report(tmp_path: Path) -> None:
    assert set(TASKS) == {"classification", "segmentation", "detection"}
    for task in TASKS.values():
        assert (REPO_ROOT / task.config_file).is_file()
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"metrics": {"map": 0.25, "map50": None}}))
    assert _read_metric(tmp_path, "map") == 0.25
    assert math.isnan(_read_metric(tmp_path, "map50"))
