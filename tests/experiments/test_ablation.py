"""The ablation command end to end at a tiny scale, and its downstream budgets per task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundle_helpers import tiny_pretrain_overrides
from PIL import Image

from sista_monai.experiments.ablation import downstream_budgets, main
from sista_monai.experiments.controls import degenerate_runs, trivial_baselines
from sista_monai.experiments.effects import ESTABLISHED_LEGEND
from sista_monai.experiments.probes import probe_fraction, validation_scores
from sista_monai.experiments.runs import RUN_CONFIG
from sista_monai.experiments.variants import DOWNSTREAM_BUDGET, PRETRAIN_CONFIG

TINY_ENCODER = {
    "image_encoder#hidden_size": 32,
    "image_encoder#mlp_dim": 64,
    "image_encoder#num_layers": 1,
    "image_encoder#num_heads": 2,
}


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
