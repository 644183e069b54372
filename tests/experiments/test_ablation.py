"""The ablation command end to end at a tiny scale, and its table by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bundle_helpers import tiny_pretrain_overrides

from sista_monai.experiments.ablation import (
    VARIANTS,
    format_effects,
    format_table,
    main,
)

TINY_ENCODER = {"image_encoder#hidden_size": 32, "image_encoder#mlp_dim": 64, "image_encoder#num_layers": 1, "image_encoder#num_heads": 2}


def test_variants_switch_off_exactly_one_part_each() -> None:
    by_name = {v.name: dict(v.overrides) for v in VARIANTS}
    assert by_name["clip"] == {"sia_threshold": 2.0, "lambda_token": 0.0}  # θ above any similarity: nothing flagged
    assert by_name["clip_sia"] == {"lambda_token": 0.0} and by_name["clip_sta"] == {"sia_threshold": 2.0}
    assert by_name["sista"] == {}
    assert {by_name[n].get("sia_mode") for n in ("sista_positive", "sista_soft")} == {"positive", "soft"}
    assert {by_name[n].get("similarity_source") for n in ("sista_text_online", "sista_text_frozen")} == {"text_online", "text_frozen"}


def test_table_is_mean_and_sample_std_per_cell() -> None:
    results = {
        "variants": {
            "clip": {"pretrain": {"recall_at_5": [0.2, 0.4], "flag_precision": [float("nan")] * 2, "pointing": [0.1, 0.1]},
                     "classification": {"1": [0.6, 0.8]}},
            "random": {"classification": {"1": [0.5, float("nan")]}},
        }
    }
    table = format_table(results, ["classification"], [1]).splitlines()
    assert table[0] == "| variant | image→report R@5 | SIA flag precision | STA pointing accuracy | RSNA-like AUROC, 1 % |"
    assert table[2].endswith("| 0.300 ± 0.141 | n/a | 0.100 ± 0.000 | 0.700 ± 0.141 |")  # std of (0.2, 0.4) = 0.1414
    assert table[3] == "| random initialisation (no pretraining) |  |  |  | 0.500 ± 0.000 (1 of 2) |"


def test_effects_are_paired_differences_seed_by_seed() -> None:
    results = {
        "variants": {
            "clip": {"pretrain": {"recall_at_5": [0.2, 0.4, 0.3], "pointing": [0.1, 0.1, 0.1]}, "classification": {"1": [0.6, 0.8, 0.7]}},
            "clip_sia": {"pretrain": {"recall_at_5": [0.3, 0.3, 0.5], "pointing": [0.1, 0.2, float("nan")]}, "classification": {"1": [0.7, 0.7, 0.7]}},
            "sista": {"pretrain": {"recall_at_5": [0.2, 0.4]}, "classification": {"1": [0.9, 0.9, 0.9]}},
            "random": {"classification": {"1": [0.5, 0.5, 0.6]}},
        }
    }
    table = format_effects(results, ["classification"], [1]).splitlines()
    assert table[0] == "| effect | image→report R@5 | STA pointing accuracy | RSNA-like AUROC, 1 % |"
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in table[2:]}
    # R@5: differences (0.1, -0.1, 0.2): mean 0.0667, sample std 0.1528; pointing: (0, 0.1) with the NaN seed left out
    assert rows["+ SIA (vs CLIP only)"] == ["+0.067 ± 0.153 (better in 2 of 3)", "+0.050 ± 0.071 (better in 1 of 2)",
                                             "+0.000 ± 0.100 (better in 1 of 3) |"]
    # sista has 2 R@5 values for 3 seeds: not paired, left empty; no pointing at all: empty
    assert rows["SIA and STA (SISTA vs CLIP only)"] == ["", "", "+0.200 ± 0.100 (better in 3 of 3) |"]
    assert rows["pretraining (SISTA vs random initialisation)"] == ["", "", "+0.367 ± 0.058 (better in 3 of 3) |"]
    assert len(rows) == 4  # contrasts with clip_sta are left out: it was not run
    assert "STA within SISTA (SISTA vs + SIA)" in rows


@pytest.mark.slow
def test_tiny_ablation_writes_the_table_plots_and_sweep(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    pretrain = {**tiny_pretrain_overrides(data), "demo_plant_phi": False, "epochs": 2, "warmup_epochs": 1}
    downstream = {"dataset_dir": str(data), "demo_n": 40, "demo_size": 64, "resize_size": 64, "image_size": 48,
                  "batch_size": 8, "val_batch_size": 8, "epochs": 1, "min_iterations_per_epoch": 2, **TINY_ENCODER}
    args = ["--seeds", "0", "--variants", "clip", "sista", "--tasks", "classification", "--fractions", "10",
            "--out", str(tmp_path / "out"), "--publish", str(tmp_path / "docs" / "ablation.md")]
    args += [a for k, v in pretrain.items() for a in ("--set-pretrain", f"{k}={json.dumps(v)}")]
    args += [a for k, v in downstream.items() for a in ("--set-downstream", f"{k}={json.dumps(v)}")]
    assert main(args) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == {"clip", "sista", "random"}
    assert len(list(out.rglob("ablation_seconds.json"))) == 2 + 3 and summary["run_seconds"] > 0  # 2 pretrainings, 3 downstream
    for name in ("clip", "sista", "random"):
        (auroc,) = summary["variants"][name]["classification"]["10"]
        assert math.isnan(auroc) or 0.0 <= auroc <= 1.0
    assert summary["variants"]["clip"]["pretrain"]["flag_rate"] == [0.0]  # θ = 2 flags nothing
    sweep = summary["theta_sweep"]["labels"]
    rates = [p["flag_rate"] for p in sweep]
    assert rates == sorted(rates, reverse=True)  # a higher θ never flags more pairs
    assert sweep[-1]["theta"] == 1.0
    precision = sweep[-1]["flag_precision"]  # labels source at θ = 1: only pairs with identical findings are flagged
    assert math.isnan(precision) or precision == 1.0
    text = (tmp_path / "docs" / "ablation.md").read_text()
    assert "| CLIP only" in text and "| random initialisation" in text and "Wall time" in text
    splits = json.loads((data / "datalist_pretrain.json").read_text())
    assert "{}/{}/{} training/validation/test studies".format(*(len(splits[s]) for s in ("training", "validation", "test"))) in text
    labelled = json.loads((out / "classification" / "random_f10_s0" / "eval" / "metrics.json").read_text())["training_images"]
    assert f"classification 10 % = {labelled} labelled training images" in text
    for name in ("plot_auroc.png", "theta_sweep.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (tmp_path / "docs" / name).is_file()
