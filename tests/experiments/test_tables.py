"""The ablation's markdown tables by hand: results with the image-free baselines, and the paired effects."""

from __future__ import annotations

from sista_monai.experiments.controls import below_baseline
from sista_monai.experiments.effects import paired_effect
from sista_monai.experiments.tables import format_effects, format_table


def test_table_is_mean_and_sample_std_per_cell() -> None:
    results = {
        "variants": {
            "clip": {
                "pretrain": {"lesion": [0.2, 0.4], "flag_precision": [float("nan")] * 2, "zone": [0.1, 0.1]},
                "classification": {"1": [0.6, 0.8]},
            },
            "random": {"classification": {"1": [0.5, float("nan")]}},
        }
    }
    table = format_table(results, ["classification"], [1]).splitlines()
    assert table[0] == (
        "| variant | lesion grounding | its image-free prior | its text pointer | counterfactual follow rate | "
        "zone grounding | semantic P@5 | image→report R@5 | SIA flag precision | SIA flag recall | STA patches kept | "
        "RSNA-like AUROC, 1 % |"
    )
    # std of (0.2, 0.4) = 0.1414; columns not measured are empty
    assert table[2].endswith("| 0.300 ± 0.141 |  |  |  | 0.100 ± 0.000 |  |  | n/a |  |  | 0.700 ± 0.141 |")
    assert table[3] == "| random initialisation (no pretraining) |" + "  |" * 10 + " 0.500 ± 0.000 (1 of 2) |"


def test_table_ends_with_the_image_free_baselines() -> None:
    results = {
        "variants": {"clip": {"segmentation": {"10": [0.8, 0.9]}}, "random": {"segmentation": {"10": [0.6, 0.7]}}},
        "baselines": {"segmentation": {"10": {"value": 0.7273, "what": "the all-empty prediction"}}},
    }
    last = format_table(results, ["segmentation"], [10]).splitlines()[-1]
    assert (
        last
        == "| image-free baseline (fitted on the labelled training images) |"
        + "  |" * 10
        + " 0.727 (the all-empty prediction) |"
    )
    # clip's mean 0.85 beats 0.7273; random's 0.65 does not
    assert below_baseline(results, ["segmentation"], [10]) == [
        "random: SIIM-like Dice, 10 %: 0.650 ≤ 0.727 (the all-empty prediction)"
    ]


def test_effects_are_paired_differences_seed_by_seed() -> None:
    results = {
        "variants": {
            "clip": {
                "pretrain": {"lesion": [0.2, 0.4, 0.3], "semantic_precision": [0.1, 0.1, 0.1]},
                "classification": {"1": [0.6, 0.8, 0.7]},
            },
            "clip_sia": {
                "pretrain": {"lesion": [0.3, 0.3, 0.5], "semantic_precision": [0.1, 0.2, float("nan")]},
                "classification": {"1": [0.7, 0.7, 0.7]},
            },
            "sista": {"pretrain": {"lesion": [0.2, 0.4]}, "classification": {"1": [0.9, 0.9, 0.9]}},
            "random": {"classification": {"1": [0.5, 0.5, 0.6]}},
        }
    }
    table = format_effects(results, ["classification"], [1]).splitlines()
    assert (
        table[0] == "| effect | lesion grounding | counterfactual follow rate | semantic P@5 | RSNA-like AUROC, 1 % |"
    )
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in table[2:]}
    lesion = paired_effect([0.3, 0.3, 0.5], [0.2, 0.4, 0.3])  # differences (0.1, -0.1, 0.2)
    # the cell shows the t-interval (not the bootstrap one); not established: no bold, no mark
    assert rows["+ SIA (vs CLIP only)"][0] == (
        f"+0.067 [{lesion['t_low']:+.3f}, {lesion['t_high']:+.3f}], p {lesion['p']:.3f} (better in 2 of 3)"
    )
    assert rows["+ SIA (vs CLIP only)"][1] == ""  # no counterfactual follow rate measured
    assert rows["+ SIA (vs CLIP only)"][2].endswith("(better in 1 of 2)")  # the NaN seed is left out
    # sista has 2 lesion values for 3 seeds: not paired, left empty; no semantic precision at all: empty
    assert rows["SIA and STA (SISTA vs CLIP only)"][:3] == ["", "", ""]
    # differences (0.4, 0.4, 0.3) against random: mean 0.367, sd 0.0577, t-interval 0.367 ± 4.3027 · 0.0577 / √3
    pretraining = rows["pretraining (SISTA vs random initialisation)"][3]
    assert pretraining == "**+0.367 [+0.223, +0.510], p 0.008 (better in 3 of 3)** ✓ |"  # established: bold, ✓
    assert len(rows) == 4  # contrasts with clip_sta, the oracle and dense STA are left out: they were not run
    assert "STA within SISTA (SISTA vs + SIA)" in rows
