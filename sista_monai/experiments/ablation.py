"""Ablation study on the demo data: does each part of SISTA earn its place?

::

    python -m sista_monai.experiments ablation [--seeds 0 1 2 3 4] [--out results/ablation] [--variants ...]
        [--tasks classification segmentation detection] [--fractions 1 10] [--reuse] [--publish FILE]
        [--set-pretrain KEY=VALUE ...] [--set-downstream KEY=VALUE ...]

For every variant (:data:`VARIANTS`) and seed, ``bundles/pretrain/configs/train.json`` is run with the
variant's overrides and the budget overrides into ``<out>/pretrain/<variant>_s<seed>`` (its ``eval/metrics.json``
gives lesion and zone grounding with the image-free prior, semantic precision@5, Recall@5, the SIA flag precision
and recall and the STA patches kept); then every downstream
bundle (linear probe / frozen encoder, as the bundles' defaults) is trained at each label fraction on that
run's ``models/image_encoder.pt`` and, once per seed, on a random initialisation, into
``<out>/<task>/<variant>_f<fraction>_s<seed>``; each downstream run's validation score (final and best epoch, from
its TensorBoard log: :mod:`sista_monai.experiments.probes`) is kept beside its test metric, and each task's probe
fraction, the smallest label fraction at which every encoder's probe beats the constant predictor on validation,
is stated. A θ sweep of the SIA flags (rate and precision against the demo's finding labels) runs on the test
split with the SISTA runs of every similarity source. Effects (:data:`EFFECTS`) are paired differences over seeds
with a Student-t 95 % interval, marked established where it excludes 0 and p < 0.05
(:mod:`sista_monai.experiments.effects`).

Outputs under ``<out>``: ``ablation.md`` (the table, the command, the hardware, the wall time, the sizes),
``summary.json`` (every run's values), ``plot_<metric>.png`` per downstream metric and ``theta_sweep.png``;
``--publish`` copies ``ablation.md`` (e.g. to ``bundles/pretrain/docs/ablation.md``) with the plots beside it.
Every run keeps its bundle folder and the configuration it ran with (``ablation_config.json``), so ``--reuse``
resumes an interrupted study and redoes only the runs whose configuration changed since (a new bundle default
included), the pretraining runs whose report predates the counterfactual metrics, and the probes of a redone
pretraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sista_monai.experiments import runs
from sista_monai.experiments.effects import (
    BOOTSTRAP_RESAMPLES,
    ESTABLISHED_LEGEND,
    effect_cell,
    established,
    paired_effect,
)
from sista_monai.experiments.probes import (
    VALIDATION_KEYS,
    constant_validation_score,
    probe_fraction,
    validation_scores,
)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "DOWNSTREAM_BUDGET",
    "EFFECTS",
    "PRETRAIN_BUDGET",
    "PRETRAIN_KEYS",
    "VARIANTS",
    "Variant",
    "bundle_defaults",
    "effects_summary",
    "established",
    "format_effects",
    "format_probe_fractions",
    "format_table",
    "format_validation",
    "main",
    "below_baseline",
    "degenerate_reason",
    "degenerate_runs",
    "downstream_budgets",
    "downstream_validation",
    "same_configurations",
    "task_fractions",
    "paired_effect",
    "probe_fraction",
    "run_ablation",
    "trivial_baselines",
]

logger = logging.getLogger(__name__)

PRETRAIN_CONFIG = "bundles/pretrain/configs/train.json"
EVALUATE_CONFIG = "bundles/pretrain/configs/evaluate.json"


@dataclass(frozen=True)
class Variant:
    """A pretraining variant: its name, its label in the table and its config overrides."""

    name: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


OFF_SOURCE: dict[str, Any] = {"similarity_source": "text_frozen"}
"""The report-similarity source of the rows with SIA off (θ = 2), whose loss it cannot change."""

VARIANTS: tuple[Variant, ...] = (
    # SIA off: θ above every report similarity (cosines and label agreements are at most 1) flags nothing, and
    # the SIA loss is then the standard InfoNCE; STA off: its weight is 0. With SIA off the report similarity
    # feeds only the flag metrics, so these rows pin it (OFF_SOURCE): a change of the headline's source then
    # leaves their runs valid for --reuse.
    Variant(
        "clip",
        "CLIP only (SIA off: θ = 2; STA off: λ_token = 0)",
        {"sia_threshold": 2.0, "lambda_token": 0.0} | OFF_SOURCE,
    ),
    Variant("clip_sia", "+ SIA (the headline's report similarity)", {"lambda_token": 0.0}),
    Variant("clip_sta", "+ STA", {"sia_threshold": 2.0} | OFF_SOURCE),
    Variant(
        "clip_sta_within",
        "+ STA within pairs only (SIA off: θ = 2; sta_contrast = within)",
        {"sia_threshold": 2.0, "sta_contrast": "within"} | OFF_SOURCE,
    ),
    Variant("sista", "SISTA (the bundle default: SIA + STA)", {}),
    Variant(
        "sista_oracle",
        "SISTA, SIA from the labels oracle (θ 0.95: identical finding sets)",
        {"similarity_source": "labels", "sia_threshold": 0.95},
    ),
    Variant("sista_dense", "SISTA, dense STA (σ = 0)", {"sta_sparsity_threshold": 0.0}),
    # 1/P with the demo's 8 x 8 patch grid (a None override would be dropped by MONAI's runner)
    Variant("sista_sigma_1p", "SISTA, STA σ = 1/P (SPARC's; 1/64 here)", {"sta_sparsity_threshold": 1 / 64}),
    Variant("sista_sigma_0.25", "SISTA, STA σ = 0.25", {"sta_sparsity_threshold": 0.25}),
    Variant("sista_sigma_0.75", "SISTA, STA σ = 0.75", {"sta_sparsity_threshold": 0.75}),
    Variant(
        "sista_text_online", "SISTA, similarity from the online text encoder", {"similarity_source": "text_online"}
    ),
    # SIA's report similarity (issue 25): the rule labeler's finding vectors (the headline since issue 25) against
    # the frozen MLM encoder (the headline before it, θ 0.76 chosen on validation)
    Variant(
        "sista_findings",
        "SISTA, similarity from the finding labeler (similarity_source = findings)",
        {"similarity_source": "findings"},
    ),
    Variant(
        "sista_text_frozen",
        "SISTA, similarity from the frozen MLM encoder (centred cosine, θ 0.76)",
        {"similarity_source": "text_frozen", "sia_threshold": 0.76},
    ),
    # SIA at a larger global batch: a row holds 63 unpaired reports instead of 15, so about four times the false
    # negatives to remove. Same epochs (the same studies seen, a quarter of the optimiser steps) and learning rate;
    # SIA's effect at 64 is sista_b64 against clip_sta_b64, run on the same budget
    Variant("clip_sta_b64", "+ STA, global batch 64 (SIA off)", {"sia_threshold": 2.0, "batch_size": 64} | OFF_SOURCE),
    Variant("sista_b64", "SISTA, global batch 64", {"batch_size": 64}),
    # STA's terms (issue 24): the within-pair term alone can be solved by a position code without the image; the
    # cross-image term contrasts each content word across the images of the batch
    Variant("sista_within", "SISTA, STA within pairs only (sta_contrast = within)", {"sta_contrast": "within"}),
    Variant("sista_cross", "SISTA, STA across images only (sta_contrast = cross)", {"sta_contrast": "cross"}),
    Variant(
        "sista_both",
        "SISTA, STA within pairs and across images (sta_contrast = both)",
        {"sta_contrast": "both"},
    ),
    Variant(
        "sista_shuffled",
        "control: SISTA with STA on mismatched image–report pairs (sta_pairs = shuffled)",
        {"sta_pairs": "shuffled"},
    ),
)
"""The pretraining variants; ``random`` (no pretraining) is added to the downstream rows. The σ variants with
``sista`` (σ = 0.5, the bundle default) and ``sista_dense`` (σ = 0) make the σ sweep. ``sista`` and ``clip_sta``
run the bundle's defaults (``bundles/pretrain/configs/train.json``, :func:`bundle_defaults`), e.g. its
``sta_contrast``; a variant that sets a key to its default (``sista_both`` while the default is ``both``) runs
the same configuration as ``sista``, which the page notes (:func:`same_configurations`)."""

PRETRAIN_BUDGET: dict[str, Any] = {"epochs": 10, "val_interval": 5, "save_interval": 5, "warmup_epochs": 1}
"""Pretraining budget of the study (the bundle default is 30 epochs): sized for 2 CPU cores."""

DOWNSTREAM_BUDGET: dict[str, dict[str, Any]] = {
    "classification": {"epochs": 4, "min_iterations_per_epoch": 20},
    "segmentation": {"epochs": 12, "min_iterations_per_epoch": 27},
    "detection": {"epochs": 4, "min_iterations_per_epoch": 20},
}
"""Downstream budget of the study per task (the bundles' defaults: 30 x 10 steps for classification, 12 x 27 for
segmentation and detection). Segmentation gets its bundle's default 324 steps: at 80 the probes tried predicted a
pneumothorax on most images, far below the all-empty prediction, and at 216 five of the 35 runs of the issue-15
study still sat at the all-empty prediction (their best validation epoch)."""

TASK_METRICS = {
    "classification": ("auroc", "RSNA-like AUROC"),
    "segmentation": ("mean_dice", "SIIM-like Dice"),
    "detection": ("map", "detection mAP"),
}
THETAS = tuple(round(0.02 * k, 2) for k in range(51))


def sweep_variants(variants: Sequence[Variant], defaults: Mapping[str, Any]) -> dict[str, Variant]:
    """The run whose flags the θ sweep re-scores, per report-similarity source: the first variant of the study (in
    :data:`VARIANTS` order) with that source and SIA on (θ ≤ 1). The flags depend on the source and the run's
    frozen or online text features, not on the variant's other parts."""
    chosen: dict[str, Variant] = {}
    for variant in variants:
        config = {**defaults, **variant.overrides}
        if float(config.get("sia_threshold", 0.0)) <= 1.0:
            chosen.setdefault(str(config.get("similarity_source")), variant)
    return chosen


Fractions = Sequence[int] | Mapping[str, Sequence[int]]
"""Downstream label fractions (percent): one list for every task, or a list per task."""


def _pairs(tasks: Sequence[str], fractions: Fractions) -> list[tuple[str, int]]:
    """``(task, fraction)`` in table order; ``fractions`` is one list for every task or a list per task."""
    return [
        (task, fraction)
        for task in tasks
        for fraction in (fractions.get(task, ()) if isinstance(fractions, Mapping) else fractions)
    ]


def task_fractions(fractions: Sequence[int], items: Sequence[str], tasks: Sequence[str]) -> dict[str, list[int]]:
    """The label fractions of each task: ``fractions``, or ``TASK=F[,F...]`` for the tasks named in ``items``."""
    per_task = {task: list(fractions) for task in tasks}
    for item in items:
        task, sep, values = item.partition("=")
        if not sep or task not in TASK_METRICS:
            raise SystemExit(
                f"--task-fractions {item!r}: expected TASK=F[,F...] with TASK one of {', '.join(TASK_METRICS)}"
            )
        if task in per_task:
            per_task[task] = [int(v) for v in values.split(",") if v]
    return per_task


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def downstream_budgets(items: Sequence[str], tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each task's downstream overrides: :data:`DOWNSTREAM_BUDGET` updated by ``[TASK:]KEY=VALUE`` items.

    An item without a task prefix applies to every task; ``segmentation:epochs=12`` to that task only.
    """
    budgets = {task: dict(DOWNSTREAM_BUDGET.get(task, {})) for task in tasks}
    for key, value in _parse_overrides(items).items():
        task, sep, name = key.partition(":")
        if not sep:
            for budget in budgets.values():
                budget[key] = value
        elif task not in TASK_METRICS:
            raise SystemExit(f"--set-downstream {key}: unknown task {task!r} (one of {', '.join(TASK_METRICS)})")
        elif task in budgets:
            budgets[task][name] = value
    return budgets


PRETRAIN_KEYS: tuple[tuple[str, str], ...] = (
    ("lesion", "lesion grounding"),
    ("lesion_prior", "its image-free prior"),
    ("lesion_text_pointer", "its text pointer"),
    ("counterfactual_follow_rate", "counterfactual follow rate"),
    ("zone", "zone grounding"),
    ("semantic_precision", "semantic P@5"),
    ("recall_at_5", "image→report R@5"),
    ("flag_precision", "SIA flag precision"),
    ("flag_recall", "SIA flag recall"),
    ("patches_kept", "STA patches kept"),
)
"""The pretraining columns of the table: ``summary.json`` keys and their labels. The text pointer reads the
report's sentence but never the image; the counterfactual follow rate is the share of trials in which a word's
best patch follows its finding when the finding is moved in a twin image (its two image-free pointers,
``counterfactual_prior`` and ``counterfactual_text_pointer`` in ``summary.json``, are near 0 by construction)."""


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _pretrain_values(bundle_root: Path) -> dict[str, float]:
    """``summary.json``'s pretraining values of one run, from its ``eval/metrics.json`` (NaN for what a report
    written before a metric existed lacks)."""
    report = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    grounding, sia = report["grounding"], report["sia"]
    counterfactual = grounding.get("counterfactual", {})
    return {
        "lesion": _number(grounding["lesion"]["accuracy"]),
        "lesion_prior": _number(grounding["lesion"]["prior"]),
        "lesion_text_pointer": _number(grounding["lesion"].get("text_pointer")),
        "counterfactual_follow_rate": _number(counterfactual.get("follow_rate")),
        "counterfactual_prior": _number(counterfactual.get("prior")),
        "counterfactual_text_pointer": _number(counterfactual.get("text_pointer")),
        "counterfactual_trials": _number(counterfactual.get("trials")),
        "zone": _number(grounding["zone"]["accuracy"]),
        "semantic_precision": _number(report["retrieval"]["semantic"]["precision_at_5"]),
        "recall_at_5": _number(report["retrieval"]["image_to_report"]["R@5"]),
        "flag_precision": _number(sia.get("flag_precision")),
        "flag_recall": _number(sia.get("flag_recall")),
        "flag_rate": _number(sia.get("flag_rate")),
        "patches_kept": _number(report["sta"]["patches_kept"]),
    }


def _downstream_value(bundle_root: Path, metric: str) -> float:
    value = json.loads((bundle_root / "eval" / "metrics.json").read_text()).get("metrics", {}).get(metric)
    return float("nan") if value is None else float(value)


def bundle_defaults(config_file: str | Path = PRETRAIN_CONFIG) -> dict[str, Any]:
    """The literal top-level values of the pretraining config (:func:`sista_monai.experiments.runs.bundle_defaults`)."""
    return runs.bundle_defaults(config_file)


def _pretrain_config(variant: Variant, seed: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What a pretraining run is configured with: the bundle defaults, the budget, the overrides, the variant's."""
    return runs.as_json({**bundle_defaults(), **PRETRAIN_BUDGET, **overrides, **variant.overrides, "seed": seed})


def same_configurations(variants: Sequence[Variant], overrides: Mapping[str, Any]) -> list[list[str]]:
    """Groups (two or more) of ``variants`` that run the same configuration with the current bundle defaults.

    E.g. ``[["sista", "sista_both"]]`` while ``train.json`` has ``sta_contrast = both``: their rows and any
    contrast between them differ by the seed-free noise of the runs only.
    """
    groups: dict[str, list[str]] = {}
    for variant in variants:
        key = json.dumps(_pretrain_config(variant, 0, overrides), sort_keys=True)
        groups.setdefault(key, []).append(variant.name)
    return [names for names in groups.values() if len(names) > 1]


def pretrain(variant: Variant, seed: int, out: Path, overrides: Mapping[str, Any], reuse: bool) -> Path:
    """Run the pretraining bundle for one variant and seed (or reuse its finished run); returns its folder.

    A finished run is reused only when its report has the grounding and counterfactual metrics and its recorded
    configuration (:data:`~sista_monai.experiments.runs.RUN_CONFIG`) matches today's: the bundle defaults, the
    budget and the overrides.
    """
    from monai.bundle import run as bundle_run

    root = out / "pretrain" / f"{variant.name}_s{seed}"
    report = root / "eval" / "metrics.json"
    config = _pretrain_config(variant, seed, overrides)
    # a report written before the grounding (or the counterfactual) metrics existed cannot fill the table: such a
    # run is redone, as is a run whose configuration changed
    done = (
        report.is_file()
        and (root / "models" / "image_encoder.pt").is_file()
        and "counterfactual" in json.loads(report.read_text()).get("grounding", {})
    )
    changed = runs.changed_keys(root, config, bundle_defaults()) if done else []
    if changed:
        logger.warning("%s: configuration changed since its run (%s): redone", root, ", ".join(changed))
    if not (reuse and done and not changed):
        logger.info("pretraining %s, seed %d -> %s", variant.name, seed, root)
        start = time.perf_counter()
        bundle_run(
            config_file=PRETRAIN_CONFIG,
            bundle_root=str(root),
            seed=seed,
            **{**PRETRAIN_BUDGET, **overrides, **variant.overrides},
        )
        _record_seconds(root, time.perf_counter() - start)
        runs.record_config(root, config)
    return root


def _record_seconds(root: Path, seconds: float) -> None:
    """Keep a run's duration beside it, so that a resumed study can still report its total compute time."""
    (root / "ablation_seconds.json").write_text(json.dumps({"seconds": seconds}) + "\n")


def _run_seconds(out: Path) -> float:
    """Sum of the recorded durations of every run under ``out``."""
    return sum(json.loads(p.read_text())["seconds"] for p in out.rglob("ablation_seconds.json"))


def downstream(
    task: str, encoder: Path | None, fraction: int, seed: int, root: Path, overrides: Mapping[str, Any], reuse: bool
) -> float:
    """Train one downstream bundle (frozen encoder) with ``overrides`` (its budget) and return its test metric.

    A finished run is reused only when its report is newer than the encoder file (a redone pretraining redoes its
    probes) and its recorded overrides (:data:`~sista_monai.experiments.runs.RUN_CONFIG`) match.
    """
    from monai.bundle import run as bundle_run

    from sista_monai.experiments.compare import TASKS

    report = root / "eval" / "metrics.json"
    config = runs.as_json({**overrides, "label_fraction": fraction, "seed": seed})
    done = report.is_file() and (encoder is None or report.stat().st_mtime >= encoder.stat().st_mtime)
    changed = runs.changed_keys(root, config, {}) if done else []
    if changed:
        logger.warning("%s: configuration changed since its run (%s): redone", root, ", ".join(changed))
    if not (reuse and done and not changed):
        logger.info("%s, %d %% labels, seed %d, encoder %s -> %s", task, fraction, seed, encoder or "random", root)
        start = time.perf_counter()
        bundle_run(
            config_file=TASKS[task].config_file,
            bundle_root=str(root),
            # the string: MONAI's bundle runner drops None overrides
            pretrained_encoder=str(encoder) if encoder is not None else "null",
            label_fraction=fraction,
            seed=seed,
            **overrides,
        )
        _record_seconds(root, time.perf_counter() - start)
        runs.record_config(root, config)
    return _downstream_value(root, TASK_METRICS[task][0])


def downstream_validation(task: str, root: Path) -> dict[str, float]:
    """The validation score of a finished downstream run in the task's table metric (:func:`validation_scores`):
    ``{"final", "best", "epochs"}``, read from the run's TensorBoard log (the bundles write no validation report)."""
    return validation_scores(root, TASK_METRICS[task][0])


def theta_sweep(
    bundle_root: Path, variant: Variant, overrides: Mapping[str, Any], thetas: Sequence[float] = THETAS
) -> list[dict[str, float]]:
    """SIA flag rate and precision on the test split of a finished pretraining run, for every θ.

    The run's network (``models/checkpoint_final.pt``) computes the report-similarity features of its own source;
    :class:`~sista_monai.metrics.FalseNegativeFlags` scores the flags against the demo's finding labels.
    """
    from monai.bundle import ConfigParser

    from sista_monai.metrics import FalseNegativeFlags

    parser = ConfigParser()
    parser.read_config([PRETRAIN_CONFIG, EVALUATE_CONFIG])
    parser.update({"bundle_root": str(bundle_root), **PRETRAIN_BUDGET, **overrides, **variant.overrides})
    parser.get_parsed_content("initialize")
    evaluator = parser.get_parsed_content("test#evaluator")
    source = parser.get_parsed_content("similarity_source")
    similarity = parser.get_parsed_content("report_similarity")  # the configured one: its centre included
    for theta in thetas:
        for report in ("rate", "precision"):
            FalseNegativeFlags(threshold=theta, source=source, report=report, similarity=similarity).attach(
                evaluator, f"sweep_{report}_{theta:.2f}"
            )
    evaluator.run()
    metrics = evaluator.state.metrics
    return [
        {
            "theta": float(t),
            "flag_rate": float(metrics[f"sweep_rate_{t:.2f}"]),
            "flag_precision": float(metrics[f"sweep_precision_{t:.2f}"]),
        }
        for t in thetas
    ]


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite)


def _cell(values: Sequence[float] | None) -> str:
    if not values:
        return ""
    mean, std, n = _mean_std(values)
    if n == 0:
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" + ("" if n == len(values) else f" ({n} of {len(values)})")


def _downstream_label(results: Mapping[str, Any], task: str, fraction: int) -> str:
    """A downstream column's header; the probe fraction of its task (:func:`probe_fraction`) is marked."""
    mark = " (probe fraction)" if probe_fraction(results, task) == fraction else ""
    return f"{TASK_METRICS[task][1]}, {fraction} %{mark}"


def format_table(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> str:
    """Markdown table: a row per variant (``random`` last), pretraining metrics then downstream metrics, and the
    image-free baselines (``results["baselines"]``, :func:`trivial_baselines`) as the last row when present. The
    column of each task's probe fraction (:func:`probe_fraction`) says so in its header."""
    columns = [label for _, label in PRETRAIN_KEYS]
    columns += [_downstream_label(results, task, fraction) for task, fraction in _pairs(tasks, fractions)]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    labels = {v.name: v.label for v in VARIANTS} | {"random": "random initialisation (no pretraining)"}
    for name, entry in results["variants"].items():
        cells = [_cell(entry.get("pretrain", {}).get(key)) for key, _ in PRETRAIN_KEYS]
        cells += [_cell(entry.get(task, {}).get(str(fraction))) for task, fraction in _pairs(tasks, fractions)]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    baselines = results.get("baselines")
    if baselines:
        cells = [""] * len(PRETRAIN_KEYS)
        for task, fraction in _pairs(tasks, fractions):
            entry = baselines.get(task, {}).get(str(fraction))
            cells.append("" if entry is None or entry["value"] is None else f"{entry['value']:.3f} ({entry['what']})")
        lines.append("| image-free baseline (fitted on the labelled training images) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_validation(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> str:
    """Markdown table of the downstream probes' validation scores, the constant predictor's as the last row.

    Each cell: mean ± sample std over seeds of the final validation epoch's score (``validation_final``, what
    :func:`probe_fraction` judges), and in brackets the mean of the best epoch's (``validation_best``, the tested
    checkpoint's, biased upwards by the selection). Variants not trained downstream are left out.
    """
    pairs = _pairs(tasks, fractions)
    columns = [_downstream_label(results, task, fraction) for task, fraction in pairs]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    labels = {v.name: v.label for v in VARIANTS} | {"random": "random initialisation (no pretraining)"}
    final_key, best_key = VALIDATION_KEYS["final"], VALIDATION_KEYS["best"]
    for name, entry in results["variants"].items():
        if not any(task in entry for task in tasks):
            continue
        cells = []
        for task, fraction in pairs:
            final = entry.get(final_key, {}).get(task, {}).get(str(fraction))
            best, _, n = _mean_std(entry.get(best_key, {}).get(task, {}).get(str(fraction), []))
            cells.append(_cell(final) + (f" (best epoch {best:.3f})" if n else ""))
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    cells = []
    for task, fraction in pairs:
        constant = constant_validation_score(results, task, fraction)
        cells.append("" if constant is None else f"{constant:.3f}")
    lines.append("| constant predictor (image-free baseline on validation) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_probe_fractions(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> list[str]:
    """One line per task stating its probe fraction (:func:`probe_fraction`), or why there is none."""
    lines = []
    final_key = VALIDATION_KEYS["final"]
    for task in tasks:
        shown = [fraction for _, fraction in _pairs([task], fractions)]
        encoders = {name: entry for name, entry in results["variants"].items() if task in entry}
        if not shown or not encoders:
            continue
        label = TASK_METRICS[task][1]
        chosen = probe_fraction(results, task)
        if chosen is not None:
            constant = constant_validation_score(results, task, chosen)
            lines.append(
                f"{label}: probes compared at {chosen} %: the smallest fraction at which every encoder's probe beats "
                f"the constant predictor on validation (mean over seeds of the final validation epoch's score > "
                f"{constant:.3f}, every one of the {len(encoders)} encoders)"
            )
            continue
        failing = []
        for fraction in shown:
            constant = constant_validation_score(results, task, fraction)
            if constant is None:
                failing.append(
                    f"{fraction} %: no constant-predictor score on validation (run the random initialisation)"
                )
                continue
            below = []
            for name, entry in encoders.items():
                mean, _, n = _mean_std(entry.get(final_key, {}).get(task, {}).get(str(fraction), []))
                if not n or mean <= constant:
                    below.append(f"{name} {mean:.3f}" if n else f"{name} n/a")
            failing.append(f"{fraction} %: {', '.join(below)} ≤ {constant:.3f}")
        lines.append(
            f"{label}: no probe fraction: at no fraction run does every encoder's probe beat the constant predictor "
            f"on validation ({'; '.join(failing)}); its columns compare probes that may not have learned anything"
        )
    return lines


EFFECTS: tuple[tuple[str, str, str], ...] = (
    ("+ SIA (vs CLIP only)", "clip_sia", "clip"),
    ("+ STA (vs CLIP only)", "clip_sta", "clip"),
    ("+ STA within pairs (vs CLIP only)", "clip_sta_within", "clip"),
    ("SIA and STA (SISTA vs CLIP only)", "sista", "clip"),
    ("SIA within SISTA (SISTA vs + STA)", "sista", "clip_sta"),
    ("STA within SISTA (SISTA vs + SIA)", "sista", "clip_sia"),
    ("text SIA vs the labels oracle (SISTA vs SISTA oracle)", "sista", "sista_oracle"),
    (
        "SIA's similarity: the headline's vs the frozen encoder (SISTA vs SISTA text_frozen)",
        "sista",
        "sista_text_frozen",
    ),
    ("SIA within SISTA at global batch 64 (SISTA vs + STA, both at 64)", "sista_b64", "clip_sta_b64"),
    ("sparsity (SISTA vs dense STA, σ = 0)", "sista", "sista_dense"),
    ("cross-image STA (SISTA vs within-pair STA)", "sista", "sista_within"),
    ("cross-image term alone vs within-pair term alone (SISTA cross vs within)", "sista_cross", "sista_within"),
    ("alignment (SISTA vs shuffled-pair STA)", "sista", "sista_shuffled"),
    ("pretraining (SISTA vs random initialisation)", "sista", "random"),
)
"""The contrasts of the effects table: (label, variant, baseline). ``sista`` runs the bundle defaults, so
"cross-image STA" contrasts the default ``sta_contrast`` (``both`` today) with ``within``; "alignment" contrasts
STA on the true image–report pairs with STA on mismatched ones (the shuffled-pair control)."""

EFFECT_PRETRAIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("lesion", "lesion grounding"),
    ("counterfactual_follow_rate", "counterfactual follow rate"),
    ("semantic_precision", "semantic P@5"),
)
"""The pretraining columns of the effects table: ``summary.json`` keys and their labels."""


def _effect_columns(
    results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions
) -> list[tuple[str, str, str]]:
    """``(group, key, label)`` of the effects table's columns: pretraining metrics, then each task and fraction."""
    columns = [("pretrain", key, label) for key, label in EFFECT_PRETRAIN_COLUMNS]
    columns += [
        (task, str(fraction), _downstream_label(results, task, fraction)) for task, fraction in _pairs(tasks, fractions)
    ]
    return columns


def _effect_cell(values: Sequence[float] | None, baseline: Sequence[float] | None) -> str:
    """Mean difference [t 95 % interval], paired t-test p, how many seeds improved; bold ✓ when established."""
    if not values or not baseline or len(values) != len(baseline):
        return ""
    return effect_cell(paired_effect(values, baseline))


def format_effects(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> str:
    """Markdown table of paired differences between variants (:data:`EFFECTS`), seed by seed.

    A seed's pretraining and downstream runs share their seed with the baseline's, so the difference of the two
    runs of one seed removes what the seed alone decides (data order, initialisation of the downstream head).
    Each cell: the mean difference, its Student-t 95 % interval over seeds, the paired t-test's two-sided p-value
    and the number of seeds where the variant scored higher, in bold with a ✓ when established
    (:func:`~sista_monai.experiments.effects.established`). Contrasts whose variants were not run are left out.
    """
    columns = _effect_columns(results, tasks, fractions)
    lines = ["| effect | " + " | ".join(c[2] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    variants = results["variants"]
    for label, name, baseline in EFFECTS:
        if name not in variants or baseline not in variants:
            continue
        cells = [
            _effect_cell(variants[name].get(group, {}).get(key), variants[baseline].get(group, {}).get(key))
            for group, key, _ in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effects_summary(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> list[dict[str, Any]]:
    """Every cell of the effects table as ``summary.json`` keeps it: the contrast (``effect``, ``variant``,
    ``baseline``), the column (``group``: ``pretrain`` or the task; ``key``: the metric or the fraction), the
    :func:`paired_effect` values (bootstrap and t intervals) and ``established``. Cells without paired values are
    left out."""
    rows = []
    variants = results["variants"]
    for label, name, baseline in EFFECTS:
        if name not in variants or baseline not in variants:
            continue
        for group, key, _ in _effect_columns(results, tasks, fractions):
            values = variants[name].get(group, {}).get(key)
            reference = variants[baseline].get(group, {}).get(key)
            if not values or not reference or len(values) != len(reference):
                continue
            effect = paired_effect(values, reference)
            if effect is None:
                continue
            rows.append(
                {
                    "effect": label,
                    "variant": name,
                    "baseline": baseline,
                    "group": group,
                    "key": key,
                    **effect,
                    "established": established(effect),
                }
            )
    return rows


def degenerate_reason(task: str, report: Mapping[str, Any]) -> str | None:
    """Why a downstream run's test report shows a degenerate probe, or ``None``.

    Classification: no AUROC, or exactly 0.5 (a constant score ranks nothing). Segmentation: Dice 0 on every image
    with a pneumothorax (the all-empty prediction, or masks that never touch one). Detection: no mAP, or 0.
    """
    metrics = report.get("metrics", {})
    if task == "classification":
        auroc = metrics.get("auroc")
        if auroc is None or auroc == 0.5:
            return f"AUROC {auroc}: constant scores"
    elif task == "segmentation":
        if metrics.get("positive_dice") is None:
            return "no test image with a pneumothorax: the probe's masks cannot be judged"
        if metrics["positive_dice"] == 0.0:
            return "Dice 0 on every image with a pneumothorax (all-empty or misplaced masks)"
    elif task == "detection":
        if not metrics.get("map"):
            return f"mAP {metrics.get('map')}: no correct box"
    return None


def degenerate_runs(out: Path, tasks: Sequence[str]) -> list[str]:
    """Every downstream run under ``out`` whose probe is degenerate (:func:`degenerate_reason`), one line each."""
    lines = []
    for task in tasks:
        for metrics_file in sorted((out / task).glob("*/eval/metrics.json")):
            reason = degenerate_reason(task, json.loads(metrics_file.read_text()))
            if reason:
                lines.append(f"{task} `{metrics_file.parent.parent.name}`: {reason}")
    return lines


SIGMA_VARIANTS = {
    "sista_dense": 0.0,
    "sista_sigma_1p": 1 / 64,
    "sista_sigma_0.25": 0.25,
    "sista": 0.5,
    "sista_sigma_0.75": 0.75,
}
"""σ of each variant of the σ sweep (``sista`` runs the bundle default, 0.5)."""


def _sigma_plot(results: Mapping[str, Any], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    points = [
        (sigma, results["variants"][name]["pretrain"])
        for name, sigma in SIGMA_VARIANTS.items()
        if name in results["variants"]
    ]
    if len(points) < 2:
        return None
    points.sort(key=lambda point: point[0])
    figure, (ground_axis, kept_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    sigmas = [sigma for sigma, _ in points]
    for key, label in (
        ("lesion", "lesion grounding"),
        ("lesion_prior", "image-free prior"),
        ("zone", "zone grounding"),
    ):
        stats = [_mean_std(values.get(key, [])) for _, values in points]
        ground_axis.errorbar(
            sigmas, [m for m, _, _ in stats], yerr=[sd for _, sd, _ in stats], marker="o", capsize=3, label=label
        )
    kept = [_mean_std(values.get("patches_kept", [])) for _, values in points]
    kept_axis.errorbar(sigmas, [m for m, _, _ in kept], yerr=[sd for _, sd, _ in kept], marker="o", capsize=3)
    ground_axis.set(xlabel="σ", ylabel="pointing accuracy (test)")
    ground_axis.legend()
    kept_axis.set(xlabel="σ", ylabel="STA patches kept", ylim=(0, 1.05))
    figure.tight_layout()
    path = out / "sigma_sweep.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plots(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(results["variants"])
    for task in tasks:
        figure, axis = plt.subplots(figsize=(8, 3.5))
        shown = [fraction for t, fraction in _pairs([task], fractions)]
        width = 0.8 / max(len(shown), 1)
        for k, fraction in enumerate(shown):
            stats = [_mean_std(results["variants"][n].get(task, {}).get(str(fraction), [])) for n in names]
            axis.bar(
                [i + k * width for i in range(len(names))],
                [s[0] for s in stats],
                width,
                yerr=[s[1] for s in stats],
                label=f"{fraction} % labels",
                capsize=3,
            )
        axis.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right")
        axis.set_ylabel(TASK_METRICS[task][1])
        axis.legend()
        figure.tight_layout()
        path = out / f"plot_{TASK_METRICS[task][0]}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    if results.get("theta_sweep"):
        figure, (rate_axis, precision_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
        for source, points in results["theta_sweep"].items():
            thetas = [p["theta"] for p in points]
            rate_axis.plot(thetas, [p["flag_rate"] for p in points], marker=".", label=source)
            precision_axis.plot(thetas, [p["flag_precision"] for p in points], marker=".", label=source)
        rate_axis.set(xlabel="θ", ylabel="flag rate (share of off-diagonal pairs)", yscale="log")
        precision_axis.set(xlabel="θ", ylabel="flag precision (same findings)", ylim=(0, 1.05))
        precision_axis.legend()
        figure.tight_layout()
        path = out / "theta_sweep.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    sigma = _sigma_plot(results, out)
    if sigma is not None:
        written.append(sigma)
    return written


def run_ablation(
    out: Path,
    seeds: Sequence[int],
    variants: Sequence[Variant],
    tasks: Sequence[str],
    fractions: Fractions,
    pretrain_overrides: Mapping[str, Any],
    downstream_overrides: Mapping[str, Mapping[str, Any]],
    reuse: bool = False,
    sweep: bool = True,
    downstream_variants: Sequence[str] | None = None,
    random: bool = True,
) -> dict[str, Any]:
    """Run every pretraining variant, the downstream tasks and the θ sweep; returns ``summary.json``'s content.

    ``results["variants"][name]``: ``pretrain`` (``{key: [value per seed]}``, :func:`_pretrain_values`), the test
    metric of each task (``{task: {fraction: [value per seed]}}``) and its validation scores beside it
    (``validation_final`` and ``validation_best``, same shape: :func:`downstream_validation`).

    ``downstream_overrides`` maps each task to its overrides (:func:`downstream_budgets`); only the variants named
    in ``downstream_variants`` (default: all) are trained downstream, the others give pretraining metrics only;
    ``random=False`` leaves out the random-initialisation runs and the baselines (for an invocation running beside
    another one on the same ``out``).
    """
    results: dict[str, Any] = {"variants": {}, "theta_sweep": {}}
    with_downstream = {v.name for v in variants} if downstream_variants is None else set(downstream_variants)
    for variant in variants:
        entry = results["variants"].setdefault(variant.name, {"pretrain": {}})
        for seed in seeds:
            root = pretrain(variant, seed, out, pretrain_overrides, reuse)
            for key, value in _pretrain_values(root).items():
                entry["pretrain"].setdefault(key, []).append(value)
            if variant.name not in with_downstream:
                continue
            for task, fraction in _pairs(tasks, fractions):
                run_root = out / task / f"{variant.name}_f{fraction}_s{seed}"
                value = downstream(
                    task,
                    root / "models" / "image_encoder.pt",
                    fraction,
                    seed,
                    run_root,
                    downstream_overrides[task],
                    reuse,
                )
                entry.setdefault(task, {}).setdefault(str(fraction), []).append(value)
                _add_validation(entry, task, fraction, run_root)
    if tasks and random:
        entry = results["variants"].setdefault("random", {})
        for seed in seeds:
            for task, fraction in _pairs(tasks, fractions):
                run_root = out / task / f"random_f{fraction}_s{seed}"
                value = downstream(task, None, fraction, seed, run_root, downstream_overrides[task], reuse)
                entry.setdefault(task, {}).setdefault(str(fraction), []).append(value)
                _add_validation(entry, task, fraction, run_root)
        results["baselines"] = trivial_baselines(tasks, fractions, downstream_overrides)
    if sweep:
        for source, variant in sweep_variants(variants, {**bundle_defaults(), **pretrain_overrides}).items():
            root = out / "pretrain" / f"{variant.name}_s{seeds[0]}"
            results["theta_sweep"][source] = theta_sweep(root, variant, pretrain_overrides)
    return results


def _add_validation(entry: dict[str, Any], task: str, fraction: int, run_root: Path) -> None:
    """Append a downstream run's validation scores to its variant's ``validation_final`` and ``validation_best``."""
    scores = downstream_validation(task, run_root)
    for which, key in VALIDATION_KEYS.items():
        entry.setdefault(key, {}).setdefault(task, {}).setdefault(str(fraction), []).append(scores[which])


def _task_datalist(task: str, fraction: int, overrides: Mapping[str, Any]) -> tuple[Path, str]:
    """The datalist file a downstream bundle reads with ``overrides`` and its training split at ``fraction`` %."""
    from monai.bundle import ConfigParser

    from sista_monai.experiments.compare import TASKS

    parser = ConfigParser()
    parser.read_config(TASKS[task].config_file)
    parser.update({**overrides, "label_fraction": fraction})
    return Path(parser.get_parsed_content("datalist")), str(parser.get_parsed_content("train_key"))


def _masks(items: Sequence[Mapping[str, Any]]) -> Any:
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(item["label"]).convert("L")) > 0 for item in items])


def trivial_baselines(
    tasks: Sequence[str], fractions: Fractions, overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The image-free baseline of each task and label fraction on the test split (:mod:`sista_monai.metrics.baselines`).

    Returns ``{task: {fraction: {"value": v, "what": description, "validation": v, ...}}}``, ``value`` in the
    task's table metric on the test split and ``validation`` the same baseline's score on the validation split
    (fitted on the same labelled training images; ``None`` without a validation split), the constant predictor of
    :func:`probe_fraction`.
    """
    from sista_monai.data.tasks import detection_datalist, segmentation_datalist
    from sista_monai.metrics.baselines import CONSTANT_SCORE_AUROC, detection_baseline, segmentation_baselines

    baselines: dict[str, Any] = {}
    for task, fraction in _pairs(tasks, fractions):
        entry: dict[str, Any]
        if task == "classification":
            entry = {"value": CONSTANT_SCORE_AUROC, "what": "a constant score", "validation": CONSTANT_SCORE_AUROC}
        else:
            datalist, train_key = _task_datalist(task, fraction, overrides[task])
            has_validation = bool(json.loads(Path(datalist).read_text()).get("validation"))
            if task == "segmentation":
                training_masks = _masks(segmentation_datalist(datalist, train_key))
                result = segmentation_baselines(training_masks, _masks(segmentation_datalist(datalist, "test")))
                best = (
                    "all_empty"
                    if result["all_empty"]["mean_dice"] >= result["constant_mask"]["mean_dice"]
                    else "constant_mask"
                )
                validation = (
                    segmentation_baselines(training_masks, _masks(segmentation_datalist(datalist, "validation")))[
                        "best_mean_dice"
                    ]
                    if has_validation
                    else None
                )
                entry = {
                    "value": result["best_mean_dice"],
                    "what": f"the {best.replace('_', '-')} prediction",
                    **result,
                    "validation": validation,
                }
            else:
                training = [item["box"] for item in detection_datalist(datalist, train_key)]
                test = [item["box"] for item in detection_datalist(datalist, "test")]
                result = detection_baseline(training, test)
                validation = (
                    detection_baseline(training, [item["box"] for item in detection_datalist(datalist, "validation")])[
                        "map"
                    ]
                    if has_validation
                    else None
                )
                entry = {
                    "value": result["map"],
                    "what": f"{result['boxes']} constant boxes",
                    "map50": result["map50"],
                    "validation": validation,
                }
        baselines.setdefault(task, {})[str(fraction)] = entry
    return baselines


def below_baseline(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> list[str]:
    """Each variant, task and fraction whose mean over seeds does not beat the image-free baseline, one line each."""
    lines = []
    for task, fraction in _pairs(tasks, fractions):
        baseline = results.get("baselines", {}).get(task, {}).get(str(fraction))
        if baseline is None or baseline["value"] is None:
            continue
        for name, entry in results["variants"].items():
            mean, _, n = _mean_std(entry.get(task, {}).get(str(fraction), []))
            if n and mean <= baseline["value"]:
                lines.append(
                    f"{name}: {TASK_METRICS[task][1]}, {fraction} %: {mean:.3f} ≤ {baseline['value']:.3f} ({baseline['what']})"
                )
    return lines


def describe_sizes(
    pretrain_overrides: Mapping[str, Any], out: Path, tasks: Sequence[str], fractions: Fractions, seed: int
) -> str:
    """The study's data and model sizes: pretraining's from its config and datalist, each downstream task's from
    the test reports of its random-initialisation runs (``training_images`` and the number of test images)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(PRETRAIN_CONFIG)
    parser.update(dict(pretrain_overrides))
    data_root = Path(parser.get_parsed_content("data_root"))
    splits = json.loads((data_root / "datalist_pretrain.json").read_text())
    counts = "/".join(str(len(splits[s])) for s in ("training", "validation", "test"))
    downstream = []
    for task in tasks:
        shown = [
            f
            for _, f in _pairs([task], fractions)
            if (out / task / f"random_f{f}_s{seed}" / "eval" / "metrics.json").is_file()
        ]
        if not shown:
            continue
        reports = [
            json.loads((out / task / f"random_f{f}_s{seed}" / "eval" / "metrics.json").read_text()) for f in shown
        ]
        labelled = ", ".join(f"{f} % = {r['training_images']}" for f, r in zip(shown, reports, strict=True))
        downstream.append(
            f"{task} {labelled} labelled training images, {reports[0].get('n', reports[0].get('images'))} test images"
        )
    encoder = parser.get_parsed_content("image_encoder")
    text = parser.get_parsed_content("text_encoder")
    size = parser.get_parsed_content("image_size")
    return (
        f"Data: `{data_root}`, {counts} training/validation/test studies (image + report) for pretraining"
        + "".join(f"; {d}" for d in downstream)
        + f". Images {size}×{size} px; image encoder {sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M "
        f"parameters, text encoder {sum(p.numel() for p in text.parameters()) / 1e6:.2f} M parameters."
    )


REPORTED_DEFAULTS = ("sta_contrast", "sta_pairs", "patch_centering")
"""Bundle defaults the page states even when no variant run sets them (they shape what ``sista`` runs)."""


def _defaults_note(defaults: Mapping[str, Any], same: Sequence[Sequence[str]]) -> str:
    """The page's line on the bundle defaults of the keys the variants set, and on variants that coincide."""
    text = (
        "Bundle defaults (`bundles/pretrain/configs/train.json`) of the keys the variants set, which the SISTA row "
        "runs: " + ", ".join(f"{key} = {json.dumps(value)}" for key, value in defaults.items()) + "."
    )
    if same:
        text += " Same configuration at these defaults (their rows differ by run-to-run noise only): " + "; ".join(
            " = ".join(group) for group in same
        )
        text += "."
    return text


def _probes_section(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> str:
    """The page's probe fractions (:func:`format_probe_fractions`) and validation table (:func:`format_validation`)."""
    if not any(task in entry for entry in results["variants"].values() for task in tasks):
        return "No downstream runs."
    lines = format_probe_fractions(results, tasks, fractions)
    return (
        "\n".join(f"- {line}" for line in lines)
        + "\n\nThe probe fraction of a task is the smallest label fraction at which every encoder's probe (random "
        "initialisation included) beats the constant predictor on the *validation* split; its columns are marked "
        "(probe fraction) and compare encoders whose probes all learned something. The other columns stay, with the "
        "image-free baseline beside each (last row of the results table). Validation scores (the bundles write them "
        "to their TensorBoard logs only): mean ± sample std over seeds of the final validation epoch's, and in "
        "brackets the mean of the best epoch's (the tested checkpoint's, biased upwards by that selection).\n\n"
        + format_validation(results, tasks, fractions)
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sista_monai.experiments ablation``."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.experiments ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (pretraining and downstream)"
    )
    parser.add_argument("--out", default="results/ablation", help="output folder")
    parser.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS])
    parser.add_argument("--tasks", nargs="*", default=list(TASK_METRICS), choices=list(TASK_METRICS))
    parser.add_argument(
        "--fractions", type=int, nargs="+", default=[1, 10], help="downstream label fractions (percent)"
    )
    parser.add_argument(
        "--task-fractions",
        nargs="+",
        default=[],
        metavar="TASK=F[,F]",
        help="other label fractions for some tasks, e.g. segmentation=10 (its most expensive runs)",
    )
    parser.add_argument(
        "--no-random",
        action="store_true",
        help="skip the random-initialisation runs (another invocation on --out runs them)",
    )
    parser.add_argument(
        "--set-pretrain", action="append", default=[], metavar="KEY=VALUE", help="pretraining override (JSON value)"
    )
    parser.add_argument(
        "--set-downstream",
        action="append",
        default=[],
        metavar="[TASK:]KEY=VALUE",
        help="override of every downstream run, or of one task's runs with a TASK: prefix (e.g. segmentation:epochs=12)",
    )
    parser.add_argument(
        "--downstream-variants",
        nargs="+",
        default=None,
        choices=[v.name for v in VARIANTS],
        help="the variants trained downstream (default: every variant); the others give pretraining metrics only",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the θ sweep")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs (resume an interrupted study)")
    parser.add_argument(
        "--publish",
        default=None,
        help="also copy ablation.md (and the plots) there, e.g. bundles/pretrain/docs/ablation.md",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and write the table, the plots and ``summary.json``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pretrain_overrides, downstream_overrides = (
        _parse_overrides(args.set_pretrain),
        downstream_budgets(args.set_downstream, args.tasks),
    )
    fractions = task_fractions(args.fractions, args.task_fractions, args.tasks)
    variants = [v for v in VARIANTS if v.name in args.variants]
    results = run_ablation(
        out,
        args.seeds,
        variants,
        args.tasks,
        fractions,
        pretrain_overrides,
        downstream_overrides,
        args.reuse,
        not args.no_sweep,
        args.downstream_variants,
        not args.no_random,
    )
    wall = time.perf_counter() - start
    degenerate = degenerate_runs(out, args.tasks)
    results["degenerate_runs"] = degenerate
    results["below_baseline"] = below = below_baseline(results, args.tasks, fractions)
    results["probe_fractions"] = {task: probe_fraction(results, task) for task in args.tasks}
    results["effects"] = effects_summary(results, args.tasks, fractions)
    defaults = bundle_defaults()
    shown = {key for v in variants for key in v.overrides} | (set(REPORTED_DEFAULTS) & defaults.keys())
    results["bundle_defaults"] = {key: defaults.get(key) for key in sorted(shown)}
    results["same_configurations"] = same = same_configurations(variants, pretrain_overrides)
    command = "python -m sista_monai.experiments ablation " + " ".join(sys.argv[1:] if argv is None else argv)
    table = format_table(results, args.tasks, fractions)
    plots = _plots(results, args.tasks, fractions, out)
    results.update(
        {
            "command": command,
            "seconds": wall,
            "run_seconds": _run_seconds(out),
            "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
            "pretrain_budget": {**PRETRAIN_BUDGET, **pretrain_overrides},
            "downstream_budget": downstream_overrides,
            "seeds": list(args.seeds),
        }
    )
    invocations_file = out / "invocations.json"
    invocations = json.loads(invocations_file.read_text()) if invocations_file.is_file() else []
    import torch

    invocations.append(
        {
            "command": command,
            "seconds": wall,
            "reuse": bool(args.reuse),
            "threads": torch.get_num_threads(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    invocations_file.write_text(json.dumps(invocations, indent=2) + "\n")
    results["invocations"] = invocations
    (out / "summary.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    history = "; ".join(
        f"{i['seconds'] / 60:.1f} min ({'--reuse, ' if i['reuse'] else ''}{i['threads']} thread(s), finished {i['finished']})"
        if "threads" in i
        else f"{i['seconds'] / 60:.1f} min ({'--reuse, ' if i['reuse'] else ''}finished {i['finished']})"
        for i in invocations
    )
    effects = format_effects(results, args.tasks, fractions)
    text = (
        "# Ablation on the demo data\n\n"
        f"Command: `{command}`  \nHardware: {results['hardware']}  \nWall time of each invocation on this output "
        f"folder: {history}; {results['run_seconds'] / 60:.1f} min summed over every run's training and evaluation  \n"
        f"Seeds: {list(args.seeds)}; pretraining overrides {results['pretrain_budget']}; downstream overrides "
        f"{results['downstream_budget']} (frozen encoder); results: mean ± sample std over seeds; effects: mean paired "
        "difference [Student-t 95 % interval], paired t-test p; SIA flag precision is n/a when nothing is flagged (SIA off).  \n"
        + describe_sizes(pretrain_overrides, out, args.tasks, fractions, args.seeds[0])
        + "  \n"
        + _defaults_note(results["bundle_defaults"], same)
        + "\n\n"
        "## Results\n\n" + table + "\n\n"
        "The lesion text pointer reads the report's sentence but never the image; the counterfactual follow rate is the "
        "share of trials in which a word's best patch follows its finding when the finding is moved in a twin image (the "
        "pointers that never see the image score near 0 there by construction: `counterfactual_prior` and "
        "`counterfactual_text_pointer` in summary.json).\n\n"
        "## Probes\n\n"
        + _probes_section(results, args.tasks, fractions)
        + "\n\n## Effects\n\nDifference of a variant from its baseline, seed by seed (each seed's runs of the two "
        "variants share their seed): mean difference [Student-t 95 % interval of the mean over seeds, n - 1 degrees of "
        "freedom], two-sided paired t-test p, and the number of seeds where the variant scored higher. With 5 seeds a "
        "percentile bootstrap interval is too narrow (it covers the true mean about 83 % of the time), so the cells show "
        "the t-interval; the bootstrap interval stays in summary.json (`effects`: `low`, `high`).  \n"
        + ESTABLISHED_LEGEND
        + "\n\n"
        + effects
        + "\n\n## Degenerate downstream probes\n\n"
        + (
            "\n".join(f"- {line}" for line in degenerate)
            if degenerate
            else "None: every downstream run's probe ranks, segments or detects something."
        )
        + "\n\n## Below the image-free baseline\n\nMeans over seeds that do not beat the last row of the results table.\n\n"
        + ("\n".join(f"- {line}" for line in below) if below else "None: every mean beats its image-free baseline.")
        + "\n\n## Plots\n\n"
        + "\n".join(f"![{p.stem}]({p.name})" for p in plots)
        + "\n"
    )
    (out / "ablation.md").write_text(text)
    if args.publish:
        target = Path(args.publish)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        for plot in plots:
            shutil.copy(plot, target.parent / plot.name)
    print(table)
    print()
    print(effects)
    print(f"\n{out / 'ablation.md'} written in {wall / 60:.1f} min")
    return 0
