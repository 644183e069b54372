"""The ablation's probes that learned nothing from the image: degenerate test reports, named per run."""

from __future__ import annotations

import json
from pathlib import Path

from sista_monai.experiments.controls import degenerate_reason, degenerate_runs


def test_degenerate_probes_are_named() -> None:
    assert degenerate_reason("classification", {"metrics": {"auroc": 0.5}}) == "AUROC 0.5: constant scores"
    assert degenerate_reason("classification", {"metrics": {"auroc": None}}) is not None
    assert degenerate_reason("classification", {"metrics": {"auroc": 0.51}}) is None
    assert degenerate_reason("segmentation", {"metrics": {"mean_dice": 0.727, "positive_dice": 0.0}}).startswith(
        "Dice 0"
    )
    assert degenerate_reason("segmentation", {"metrics": {"mean_dice": 0.70, "positive_dice": 0.1}}) is None
    assert degenerate_reason("segmentation", {"metrics": {"mean_dice": 1.0, "positive_dice": None}}).startswith(
        "no test image"
    )
    assert degenerate_reason("detection", {"metrics": {"map": 0.0}}) == "mAP 0.0: no correct box"
    assert degenerate_reason("detection", {"metrics": {"map": 0.2}}) is None


def test_degenerate_runs_scans_the_output_folder(tmp_path: Path) -> None:
    for name, dice in (("clip_f1_s0", 0.0), ("sista_f1_s0", 0.4)):
        folder = tmp_path / "segmentation" / name / "eval"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"metrics": {"positive_dice": dice}}))
    assert degenerate_runs(tmp_path, ["segmentation", "classification"]) == [
        "segmentation `clip_f1_s0`: Dice 0 on every image with a pneumothorax (all-empty or misplaced masks)"
    ]
