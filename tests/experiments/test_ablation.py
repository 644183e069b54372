"""The ablation command end to end at a tiny scale, and its table by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bundle_helpers import tiny_pretrain_overrides
from PIL import Image

from sista_monai.experiments.ablation import (
    DOWNSTREAM_BUDGET,
    EFFECTS,
    OFF_SOURCE,
    PRETRAIN_CONFIG,
    VARIANTS,
    below_baseline,
    degenerate_reason,
    degenerate_runs,
    downstream_budgets,
    format_effects,
    format_table,
    main,
    paired_effect,
    sweep_variants,
    trivial_baselines,
)
from sista_monai.experiments.effects import ESTABLISHED_LEGEND
from sista_monai.experiments.probes import probe_fraction, validation_scores
from sista_monai.experiments.runs import RUN_CONFIG

TINY_ENCODER = {
    "image_encoder#hidden_size": 32,
    "image_encoder#mlp_dim": 64,
    "image_encoder#num_layers": 1,
    "image_encoder#num_heads": 2,
}


def test_variants_switch_off_exactly_one_part_each() -> None:
    by_name = {v.name: dict(v.overrides) for v in VARIANTS}
    # θ above any similarity: nothing flagged; the source of a row with SIA off is pinned (it only feeds the flag
    # metrics), so that a change of the headline's source leaves its runs valid for --reuse
    assert OFF_SOURCE == {"similarity_source": "text_frozen"}
    assert by_name["clip"] == {"sia_threshold": 2.0, "lambda_token": 0.0, **OFF_SOURCE}
    assert by_name["clip_sia"] == {"lambda_token": 0.0} and by_name["clip_sta"] == {"sia_threshold": 2.0, **OFF_SOURCE}
    assert by_name["sista"] == {}
    assert by_name["sista_oracle"] == {"similarity_source": "labels", "sia_threshold": 0.95}
    assert by_name["sista_dense"] == {"sta_sparsity_threshold": 0.0}
    assert [by_name[f"sista_sigma_{s}"]["sta_sparsity_threshold"] for s in ("1p", "0.25", "0.75")] == [
        1 / 64,
        0.25,
        0.75,
    ]
    # issue 24: STA's terms one at a time, and the shuffled-pair control
    assert [by_name[f"sista_{c}"] for c in ("within", "cross", "both")] == [
        {"sta_contrast": "within"},
        {"sta_contrast": "cross"},
        {"sta_contrast": "both"},
    ]
    assert by_name["sista_shuffled"] == {"sta_pairs": "shuffled"}
    assert by_name["clip_sta_within"] == {"sia_threshold": 2.0, "sta_contrast": "within", **OFF_SOURCE}
    # issue 25: the report similarities, and SIA at a global batch of 64 against its SIA-off control
    assert by_name["sista_findings"] == {"similarity_source": "findings"}
    assert by_name["sista_text_frozen"] == {"similarity_source": "text_frozen", "sia_threshold": 0.76}
    assert by_name["sista_b64"] == {"batch_size": 64}
    assert by_name["clip_sta_b64"] == {"sia_threshold": 2.0, "batch_size": 64, **OFF_SOURCE}
    labels = {v.name: v.label for v in VARIANTS}
    assert (
        labels["sista_shuffled"].startswith("control:") and "mismatched image–report pairs" in labels["sista_shuffled"]
    )
    assert len(labels) == len(VARIANTS)  # names are unique


def test_sweep_variants_pick_one_run_per_source_with_sia_on() -> None:
    by_name = {v.name: v for v in VARIANTS}
    chosen = sweep_variants(VARIANTS, {"similarity_source": "findings", "sia_threshold": 0.9})
    assert chosen["findings"].name == "clip_sia"  # the first variant with the default source and SIA on
    assert chosen["text_frozen"].name == "sista_text_frozen"  # clip's text_frozen rows have SIA off
    assert chosen["labels"] is by_name["sista_oracle"] and chosen["text_online"] is by_name["sista_text_online"]
    only = sweep_variants([by_name["clip"], by_name["sista"]], {"similarity_source": "findings", "sia_threshold": 0.9})
    assert {s: v.name for s, v in only.items()} == {"findings": "sista"}


def test_effects_contrast_the_new_variants() -> None:
    contrasts = {label: (name, baseline) for label, name, baseline in EFFECTS}
    assert contrasts["cross-image STA (SISTA vs within-pair STA)"] == ("sista", "sista_within")
    assert contrasts["alignment (SISTA vs shuffled-pair STA)"] == ("sista", "sista_shuffled")
    assert contrasts["+ STA within pairs (vs CLIP only)"] == ("clip_sta_within", "clip")
    names = {v.name for v in VARIANTS} | {"random"}
    assert all(name in names and baseline in names for name, baseline in contrasts.values())


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


def test_downstream_budgets_apply_to_every_task_or_to_one() -> None:
    budgets = downstream_budgets(
        ["epochs=2", "segmentation:epochs=12", "detection:batch_size=4"], ["classification", "segmentation"]
    )
    assert budgets == {
        "classification": {**DOWNSTREAM_BUDGET["classification"], "epochs": 2},
        "segmentation": {**DOWNSTREAM_BUDGET["segmentation"], "epochs": 12},
    }
    assert downstream_budgets([], ["segmentation"]) == {"segmentation": DOWNSTREAM_BUDGET["segmentation"]}
    with pytest.raises(SystemExit, match="unknown task 'segmentaton'"):
        downstream_budgets(["segmentaton:epochs=1"], ["segmentation"])


def test_paired_effect_hand_computed() -> None:
    effect = paired_effect([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    # t = 2 / (1 / sqrt(3)) = sqrt(12) with 2 degrees of freedom, whose CDF is 1/2 + t / (2 sqrt(2 + t^2))
    t = math.sqrt(12.0)
    assert effect["p"] == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(2 + t * t))), rel=1e-9)
    # resampled means of three seeds fall on multiples of 1/3 in [1, 3]; P(mean = 1) = P(mean = 3) = 1/27 > 2.5 %
    assert (effect["mean"], effect["low"], effect["high"], effect["better"], effect["n"]) == (2.0, 1.0, 3.0, 3, 3)
    # t 95 % interval: 2 ± t(0.975, 2) · 1 / sqrt(3), t(0.975, 2) = 4.302653
    assert (effect["t_low"], effect["t_high"]) == pytest.approx(
        (2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3))
    )
    assert math.isnan(paired_effect([1.0, 2.0], [1.0, 2.0])["p"])  # no spread
    assert paired_effect([float("nan")], [0.0]) is None
    with pytest.raises(ValueError):
        paired_effect([1.0, 2.0], [1.0])


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


@pytest.mark.slow
def test_tiny_ablation_writes_the_table_plots_and_sweep(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    pretrain = {**tiny_pretrain_overrides(data), "demo_plant_phi": False, "epochs": 2, "warmup_epochs": 1}
    downstream = {
        "dataset_dir": str(data),
        "demo_n": 40,
        "demo_size": 64,
        "resize_size": 64,
        "image_size": 48,
        "batch_size": 8,
        "val_batch_size": 8,
        "epochs": 1,
        "min_iterations_per_epoch": 2,
        **TINY_ENCODER,
    }
    args = [
        "--seeds",
        "0",
        "--variants",
        "clip",
        "sista",
        "sista_within",
        "sista_shuffled",
        "--downstream-variants",
        "sista",
        "--tasks",
        "classification",
        "--fractions",
        "10",
        "--out",
        str(tmp_path / "out"),
        "--publish",
        str(tmp_path / "docs" / "ablation.md"),
    ]
    args += [a for k, v in pretrain.items() for a in ("--set-pretrain", f"{k}={json.dumps(v)}")]
    args += [a for k, v in downstream.items() for a in ("--set-downstream", f"{k}={json.dumps(v)}")]
    assert main(args) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == {"clip", "sista", "sista_within", "sista_shuffled", "random"}
    assert (
        len(list(out.rglob("ablation_seconds.json"))) == 4 + 2 and summary["run_seconds"] > 0
    )  # 4 pretrainings, 2 downstream
    assert len(list(out.rglob(RUN_CONFIG))) == 4 + 2  # each run's configuration beside it
    assert "classification" not in summary["variants"]["clip"]  # not in --downstream-variants: pretraining only
    assert summary["baselines"]["classification"]["10"]["value"] == 0.5
    for name in ("sista", "random"):
        (auroc,) = summary["variants"][name]["classification"]["10"]
        encoder = "random" if name == "random" else name
        run = json.loads((out / "classification" / f"{encoder}_f10_s0" / "eval" / "metrics.json").read_text())
        assert auroc == pytest.approx(run["metrics"]["auroc"], nan_ok=True)  # the table reads each run's own report
    for name in ("sista", "random"):
        # the validation score beside the test metric: the run's TensorBoard log, final and best epoch
        scores = validation_scores(out / "classification" / f"{name}_f10_s0", "auroc")
        assert scores["epochs"] == 1  # one epoch, validated once
        entry = summary["variants"][name]
        assert entry["validation_final"]["classification"]["10"] == [pytest.approx(scores["final"], nan_ok=True)]
        assert entry["validation_best"]["classification"]["10"] == [pytest.approx(scores["best"], nan_ok=True)]
    assert summary["probe_fractions"] == {"classification": probe_fraction(summary, "classification")}
    assert summary["baselines"]["classification"]["10"]["validation"] == 0.5
    for name in ("clip", "sista", "sista_within", "sista_shuffled"):
        report = json.loads((out / "pretrain" / f"{name}_s0" / "eval" / "metrics.json").read_text())
        values = summary["variants"][name]["pretrain"]
        assert values["lesion"] == [pytest.approx(report["grounding"]["lesion"]["accuracy"], nan_ok=True)]
        assert values["lesion_text_pointer"] == [
            pytest.approx(report["grounding"]["lesion"]["text_pointer"], nan_ok=True)
        ]
        counterfactual = report["grounding"]["counterfactual"]
        assert values["counterfactual_follow_rate"] == [pytest.approx(counterfactual["follow_rate"], nan_ok=True)]
        assert values["counterfactual_text_pointer"] == [pytest.approx(counterfactual["text_pointer"], nan_ok=True)]
        recorded = json.loads((out / "pretrain" / f"{name}_s0" / RUN_CONFIG).read_text())
        assert recorded["sta_contrast"] == (
            "within" if name == "sista_within" else summary["bundle_defaults"]["sta_contrast"]
        )
    assert summary["bundle_defaults"]["sta_contrast"] == json.loads(Path(PRETRAIN_CONFIG).read_text())["sta_contrast"]
    effects = {(e["effect"], e["key"]): e for e in summary["effects"]}
    for label in ("cross-image STA (SISTA vs within-pair STA)", "alignment (SISTA vs shuffled-pair STA)"):
        effect = effects[(label, "lesion")]
        assert {"t_low", "t_high", "low", "high", "p", "established"} <= set(effect) and effect["n"] == 1
        assert effect["established"] is False  # one seed establishes nothing
    assert summary["variants"]["clip"]["pretrain"]["flag_rate"] == [0.0]  # θ = 2 flags nothing
    source = json.loads(Path(PRETRAIN_CONFIG).read_text())["similarity_source"]
    assert set(summary["theta_sweep"]) == {source}  # clip has SIA off; the other three share the default source
    sweep = summary["theta_sweep"][source]
    rates = [p["flag_rate"] for p in sweep]
    assert rates == sorted(rates, reverse=True)  # a higher θ never flags more pairs
    # the sweep, at the run's own θ, re-measures the flags of the run's report (same centred similarity)
    theta = json.loads((out / "pretrain" / "sista_s0" / "eval" / "metrics.json").read_text())["sia"]["threshold"]
    (at_theta,) = [p for p in sweep if p["theta"] == pytest.approx(theta)]
    assert at_theta["flag_rate"] == pytest.approx(summary["variants"]["sista"]["pretrain"]["flag_rate"][0])
    text = (tmp_path / "docs" / "ablation.md").read_text()
    assert "| CLIP only" in text and "| random initialisation" in text and "Wall time" in text
    assert "| control: SISTA with STA on mismatched image–report pairs" in text and "## Probes" in text
    assert "Student-t 95 % interval" in text and ESTABLISHED_LEGEND in text
    assert "| cross-image STA (SISTA vs within-pair STA) |" in text
    splits = json.loads((data / "datalist_pretrain.json").read_text())
    assert (
        "{}/{}/{} training/validation/test studies".format(
            *(len(splits[s]) for s in ("training", "validation", "test"))
        )
        in text
    )
    labelled = json.loads((out / "classification" / "random_f10_s0" / "eval" / "metrics.json").read_text())[
        "training_images"
    ]
    assert f"classification 10 % = {labelled} labelled training images" in text
    assert summary["degenerate_runs"] == degenerate_runs(out, ["classification"])
    assert "## Degenerate downstream probes" in text
    for name in ("plot_auroc.png", "theta_sweep.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (tmp_path / "docs" / name).is_file()
    assert (
        "| image-free baseline (fitted on the labelled training images) |" in text
        and "## Below the image-free baseline" in text
    )
    # --reuse redoes nothing that is finished and unchanged ...
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("ablation_seconds.json")}
    assert main([*args, "--reuse", "--no-sweep"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("ablation_seconds.json")} == stamps
    # ... but a run whose configuration changed since (here: its record edited, as a new default would) is redone
    record = out / "pretrain" / "clip_s0" / RUN_CONFIG
    record.write_text(json.dumps({**json.loads(record.read_text()), "lambda_instance": 0.5}))
    assert main([*args, "--reuse", "--no-sweep"]) == 0
    redone = {p for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert redone == {out / "pretrain" / "clip_s0" / "ablation_seconds.json"}
    # the segmentation and detection baselines read the datalists the bundles read
    budgets = {
        task: {"dataset_dir": str(data), "demo_n": 40, "demo_size": 64} for task in ("segmentation", "detection")
    }
    baselines = trivial_baselines(["segmentation", "detection"], [10], budgets)
    assert baselines["segmentation"]["10"]["validation"] is not None and baselines["detection"]["10"]["validation"] >= 0
    test = json.loads((data / "datalist_segmentation.json").read_text())["test"]
    empty = sum(not (Image.open(data / item["mask"]).getbbox()) for item in test)
    assert baselines["segmentation"]["10"]["all_empty"]["mean_dice"] == pytest.approx(empty / len(test))
    assert baselines["segmentation"]["10"]["value"] >= baselines["segmentation"]["10"]["all_empty"]["mean_dice"]
    labelled_boxes = sum(
        len(item["boxes"]) for item in json.loads((data / "datalist_detection.json").read_text())["training_10"]
    )
    assert baselines["detection"]["10"]["what"] == f"{labelled_boxes} constant boxes"


def test_sigma_sweep_plot_needs_two_sigmas(tmp_path: Path) -> None:
    from sista_monai.experiments.ablation import _sigma_plot

    one = {
        "variants": {
            "sista": {"pretrain": {"lesion": [0.2], "lesion_prior": [0.4], "zone": [0.1], "patches_kept": [0.5]}}
        }
    }
    assert _sigma_plot(one, tmp_path) is None
    two = {
        "variants": {**one["variants"], "sista_dense": {"pretrain": {"lesion": [0.1, 0.2], "patches_kept": [1.0, 1.0]}}}
    }
    path = _sigma_plot(two, tmp_path)
    assert path == tmp_path / "sigma_sweep.png" and path.read_bytes()[:4] == b"\x89PNG"
