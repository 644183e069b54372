"""The ablation's tables: results, probes' validation, probe fractions and effects, in markdown.

Every cell is a mean ± sample std over seeds or a paired effect (:mod:`.effects`); :func:`effects_summary` keeps
the effects table's cells as ``summary.json`` records them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sista_monai.experiments.effects import _mean_std, effect_cell, established, paired_effect
from sista_monai.experiments.probes import VALIDATION_KEYS, constant_validation_score, probe_fraction
from sista_monai.experiments.variants import EFFECTS, TASK_METRICS, VARIANTS, Fractions, _pairs

__all__ = [
    "EFFECT_PRETRAIN_COLUMNS",
    "PRETRAIN_KEYS",
    "effects_summary",
    "format_effects",
    "format_probe_fractions",
    "format_table",
    "format_validation",
]


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
