"""Running the ablation: every pretraining variant, its downstream probes and the θ sweep, collected per seed.

:func:`run_ablation` runs (or, with ``reuse``, keeps) the bundles of the study (:mod:`.variants`) under ``out``
and returns ``summary.json``'s values: each run's pretraining metrics, downstream test metric and validation
scores, the image-free baselines (:mod:`.controls`) and the θ sweep of the SIA flags.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sista_monai.experiments import runs
from sista_monai.experiments.controls import trivial_baselines
from sista_monai.experiments.probes import VALIDATION_KEYS, validation_scores
from sista_monai.experiments.variants import (
    EVALUATE_CONFIG,
    PRETRAIN_BUDGET,
    PRETRAIN_CONFIG,
    TASK_METRICS,
    THETAS,
    Fractions,
    Variant,
    _pairs,
    _pretrain_config,
    bundle_defaults,
    sweep_variants,
)

__all__ = ["downstream", "downstream_validation", "pretrain", "run_ablation", "theta_sweep"]

logger = logging.getLogger(__name__)


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
    evaluator = parser.get_parsed_content("evaluator")
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
